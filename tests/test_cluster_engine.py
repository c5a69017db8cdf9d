"""The cluster engine (Ray actors) against one process: the same token ids, finish
reasons and log-probabilities, and the same prefill states, for sampled and greedy
generation and for prefill-only states."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.cluster_support import local_ray, save_tiny_model

pytestmark = pytest.mark.cluster

PROMPTS = [f"What is {a} + {a + 3}?" for a in range(7)]  # 4 batches of 2: 2 actors, 2 each


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    yield from local_ray()


@pytest.fixture(scope="module")
def engines(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from engines.cluster import ClusterEngine, PoolOptions
    from engines.hf import HFEngine

    folder = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    local = HFEngine.load(str(folder), batch_size=2)
    cluster = ClusterEngine.load(str(folder), PoolOptions(workers=2, batch_size=2))
    return local, cluster


def assert_same(local: list[Any], cluster: list[Any]) -> None:
    assert [g.prompt for g in cluster] == [g.prompt for g in local]
    for one, many in zip(local, cluster, strict=True):
        assert [s.token_ids for s in many.samples] == [s.token_ids for s in one.samples]
        assert [s.finish_reason for s in many.samples] == [s.finish_reason for s in one.samples]
        for a, b in zip(one.samples, many.samples, strict=True):
            assert b.logprobs == pytest.approx(a.logprobs, abs=1e-6)
        for kind in ("query_token", "prompt_mean"):
            difference = (one.states.feature(kind) - many.states.feature(kind)).abs().max()
            assert float(difference) <= 1e-6, f"{kind} differs by {float(difference)}"


def test_sharded_sampling_equals_one_process(engines: tuple[Any, Any]) -> None:
    local, cluster = engines
    options = {"n": 3, "temperature": 1.0, "max_new_tokens": 6, "seed": 11}
    expected = local.generate(PROMPTS, **options)
    assert len({tuple(s.token_ids) for g in expected for s in g.samples}) > 3, "samples vary"
    assert_same(expected, cluster.generate(PROMPTS, **options))


def test_another_seed_gives_other_samples(engines: tuple[Any, Any]) -> None:
    _, cluster = engines
    options = {"n": 2, "temperature": 1.0, "max_new_tokens": 6}
    first = cluster.generate(PROMPTS, seed=1, **options)
    second = cluster.generate(PROMPTS, seed=2, **options)
    assert [s.token_ids for g in first for s in g.samples] != [
        s.token_ids for g in second for s in g.samples
    ]


def test_greedy_prefill_states_and_risk_equal_one_process(engines: tuple[Any, Any]) -> None:
    local, cluster = engines
    assert cluster.fingerprint == local.fingerprint
    assert (cluster.name, cluster.num_layers) == (local.name, local.num_layers)
    risk = lambda states: float(states.query_token[-1].sum())  # noqa: E731
    local.risk_fn = cluster.risk_fn = risk
    try:
        expected = local.generate(PROMPTS, max_new_tokens=5)
        found = cluster.generate(PROMPTS, max_new_tokens=5)
    finally:
        local.risk_fn = cluster.risk_fn = None
    assert_same(expected, found)
    assert [g.risk for g in found] == pytest.approx([g.risk for g in expected], abs=1e-6)
    for one, many in zip(
        local.hidden_states(PROMPTS, until_layer=1),
        cluster.hidden_states(PROMPTS, until_layer=1),
        strict=True,
    ):
        assert many.query_token.shape == one.query_token.shape == (2, 16)
        assert torch.allclose(many.query_token, one.query_token, atol=1e-6, rtol=0)


def test_progress_reaches_every_prompt(engines: tuple[Any, Any]) -> None:
    _, cluster = engines
    seen: list[tuple[int, int]] = []
    cluster.generate(PROMPTS, max_new_tokens=2, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(PROMPTS), len(PROMPTS))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_released_actors_restart_and_serve_another_version(
    engines: tuple[Any, Any], tmp_path: Path
) -> None:
    from engines.hf import HFEngine

    _, cluster = engines
    other = save_tiny_model(tmp_path / "other", seed=1)
    cluster.release()
    version = cluster.for_version(str(other))
    assert version.fingerprint == HFEngine.load(str(other)).fingerprint != cluster.fingerprint
    expected = HFEngine.load(str(other), batch_size=2).generate(PROMPTS, max_new_tokens=4)
    assert_same(expected, version.generate(PROMPTS, max_new_tokens=4))
