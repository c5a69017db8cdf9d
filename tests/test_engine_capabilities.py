"""What every engine's `generate` takes: the one `SamplingParams`."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from engines.base import Engine, SamplingParams
from engines.cluster import ClusterEngine
from engines.hf import HFEngine
from engines.vllm import VLLMEngine
from tests.probe_fakes import FakeEngine
from tests.test_agents import ScriptedWriter
from tests.test_chat_model import FakeEngine as ChatFakeEngine
from tests.test_honesty import ScriptedEngine

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
