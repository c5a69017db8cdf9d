"""What every engine's `generate` takes (the one `SamplingParams`), and the optional
capabilities (close, release, train in place, ...) each engine declares, as the session's
model versions use them. No model loads here beyond the tiny Llama."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from engines.base import (
    Closeable,
    Engine,
    FormatsPrompts,
    Releasable,
    SamplingParams,
    ServesVersions,
    TrainableInPlace,
)
from engines.cluster import ClusterEngine, PoolOptions
from engines.hf import HFEngine
from engines.vllm import VLLMEngine
from graph.versions import ModelVersions, version_loader
from tests.agents.test_agents import ScriptedWriter
from tests.agents.test_chat_model import FakeEngine as ChatFakeEngine
from tests.agents.test_honesty import ScriptedEngine
from tests.probe_fakes import FakeEngine
from tests.tiny_models import tiny_engine

# Every class that is, or stands in for, an engine.
ENGINE_CLASSES = [
    HFEngine,
    VLLMEngine,
    ClusterEngine,
    FakeEngine,
    ChatFakeEngine,
    ScriptedEngine,
    ScriptedWriter,
]
CAPABILITIES = (Closeable, Releasable, TrainableInPlace, FormatsPrompts, ServesVersions)


@pytest.mark.parametrize(
    "engine_class", ENGINE_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}"
)
def test_generate_takes_the_one_sampling_params_type(engine_class: type) -> None:
    """`generate(prompts, params: SamplingParams, *, capture, on_progress, risk_fn)`, as
    the protocol declares it: no engine copies the sampling keywords."""
    signature = inspect.signature(engine_class.generate, eval_str=True)
    _, _, params, *_ = signature.parameters.values()
    assert (params.name, params.annotation) == ("params", SamplingParams)
    assert not {f.name for f in fields(SamplingParams)} & set(signature.parameters)
    assert signature == inspect.signature(Engine.generate, eval_str=True)


def test_sampling_params_default_to_one_greedy_answer_of_64_tokens() -> None:
    params = SamplingParams()
    assert (params.n, params.temperature, params.top_p) == (1, 0.0, 1.0)
    assert (params.max_new_tokens, params.stop, params.seed) == (64, (), 0)
    assert params.greedy and not SamplingParams(temperature=0.5).greedy


class StubPool:
    """A `WorkerPool` without Ray: every actor describes the same tiny model."""

    options = PoolOptions(workers=1, batch_size=2)

    def run(self, method: str, source: str, calls: Any, on_progress: Any = None) -> list[Any]:
        return [("tiny", 2, "stub-fingerprint")] * len(calls)

    def release(self) -> None:
        pass


def vllm_without_vllm() -> VLLMEngine:
    """A vLLM engine object over the tiny transformers model, no vLLM started (its `llm`
    is never called here)."""
    return VLLMEngine(None, tiny_engine(), name="tiny")


ENGINES_AND_CAPABILITIES = [
    pytest.param(tiny_engine, {TrainableInPlace, FormatsPrompts}, id="hf"),
    pytest.param(vllm_without_vllm, {TrainableInPlace, Closeable}, id="vllm"),
    pytest.param(
        lambda: ClusterEngine(StubPool(), "model"),
        {Releasable, ServesVersions},
        id="cluster",
    ),
    pytest.param(FakeEngine, {FormatsPrompts}, id="probe-fake"),
]


@pytest.mark.parametrize(("make", "capabilities"), ENGINES_AND_CAPABILITIES)
def test_each_engine_declares_what_it_can_do(make: Any, capabilities: set[type]) -> None:
    engine = make()
    assert isinstance(engine, Engine)
    assert {c for c in CAPABILITIES if isinstance(engine, c)} == capabilities


class Recorded(FakeEngine):
    """A fake engine that records the capability calls it gets."""

    def __init__(self, log: list[str], name: str) -> None:
        super().__init__()
        self.log, self.name = log, name


class ClosingEngine(Recorded):
    def close(self) -> None:
        self.log.append(f"close {self.name}")


class ReleasingEngine(Recorded):
    def release(self) -> None:
        self.log.append(f"release {self.name}")


def test_versions_close_an_evicted_engine_that_can_close(tmp_path: Path) -> None:
    log: list[str] = []
    versions = ModelVersions(Recorded(log, "v0"), tmp_path, lambda p: ClosingEngine(log, p.name))
    versions.register("v1", tmp_path / "v1")
    versions.register("v2", tmp_path / "v2")  # one trained version in memory: v1 goes
    assert log == ["close v1"]


def test_versions_release_every_engine_that_can_release(tmp_path: Path) -> None:
    log: list[str] = []
    versions = ModelVersions(
        ReleasingEngine(log, "v0"), tmp_path, lambda p: ReleasingEngine(log, p.name)
    )
    versions.register("v1", tmp_path / "v1")
    versions.release()
    assert log == ["release v0", "release v1"]
    ModelVersions(Recorded(log, "v0"), tmp_path).release()  # nothing to release: no call
    assert log == ["release v0", "release v1"]


def test_versions_train_a_copy_only_of_weights_in_this_process(tmp_path: Path) -> None:
    state: Any = {"current_version": "v0"}
    engine = tiny_engine()
    model, tokenizer = ModelVersions(engine, tmp_path).trainable_copy(state)
    assert model is not engine.model and tokenizer is engine.tokenizer
    with pytest.raises(TypeError, match="no weights in this process"):
        ModelVersions(FakeEngine(), tmp_path).trainable_copy(state)


def test_an_engine_that_serves_versions_runs_them_and_names_its_source(tmp_path: Path) -> None:
    cluster, state = ClusterEngine(StubPool(), "the/model"), {"current_version": "v0"}
    version = version_loader("transformers", cluster)(tmp_path / "v1")
    assert isinstance(version, ClusterEngine) and version.source == str(tmp_path / "v1")
    assert version.pool is cluster.pool
    assert ModelVersions(cluster, tmp_path).source(state) == "the/model"
    assert ModelVersions(FakeEngine(), tmp_path).source(state) == "fake"  # its name
