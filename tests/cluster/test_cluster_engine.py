"""The cluster engine (Ray actors) against one process: the same token ids, finish
reasons, and log-probabilities and prefill states within the measured cross-process
tolerances of tests/cluster_support.py (actors run 1 torch thread, this process 2), for
sampled and greedy generation and for prefill-only states."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engines.base import SamplingParams
from tests.cluster_support import (
    LOGPROB_TOLERANCE,
    RISK_TOLERANCE,
    STATE_TOLERANCE,
    local_ray,
    save_tiny_model,
)

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
    """Equal prompts, token ids and finish reasons; log-probabilities, prefill states and
    risks within the measured tolerances."""
    assert [g.prompt for g in cluster] == [g.prompt for g in local]
    for one, many in zip(local, cluster, strict=True):
        assert [s.token_ids for s in many.samples] == [s.token_ids for s in one.samples]
        assert [s.finish_reason for s in many.samples] == [s.finish_reason for s in one.samples]
        for a, b in zip(one.samples, many.samples, strict=True):
            assert b.logprobs == pytest.approx(a.logprobs, abs=LOGPROB_TOLERANCE)
            assert b.entropies == pytest.approx(a.entropies, abs=LOGPROB_TOLERANCE)
        for kind in ("query_token", "prompt_mean"):
            difference = (one.states.feature(kind) - many.states.feature(kind)).abs().max()
            assert float(difference) <= STATE_TOLERANCE, f"{kind} differs by {float(difference)}"
        if one.risk is not None or many.risk is not None:
            assert many.risk == pytest.approx(one.risk, abs=RISK_TOLERANCE)


def perturbed(generations: list[Any], what: str) -> list[Any]:
    """A copy of `generations` with one thing changed: `token` (the first sample's last token
    id), `logprob` (its last log-probability, by 10x the tolerance) or `state` (the query
    token, by 10x the tolerance)."""
    from dataclasses import replace

    first, *rest = generations
    sample, *others = first.samples
    if what == "token":
        sample = replace(sample, token_ids=[*sample.token_ids[:-1], sample.token_ids[-1] + 1])
    elif what == "logprob":
        shifted = sample.logprobs[-1] + 10 * LOGPROB_TOLERANCE
        sample = replace(sample, logprobs=[*sample.logprobs[:-1], shifted])
    states = first.states
    if what == "state":
        states = replace(states, query_token=states.query_token + 10 * STATE_TOLERANCE)
    return [replace(first, samples=[sample, *others], states=states), *rest]


def test_sharded_sampling_equals_one_process(engines: tuple[Any, Any]) -> None:
    local, cluster = engines
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=11)
    expected = local.generate(PROMPTS, params)
    assert len({tuple(s.token_ids) for g in expected for s in g.samples}) > 3, "samples vary"
    found = cluster.generate(PROMPTS, params)
    assert_same(expected, found)
    for what in ("token", "logprob", "state"):  # the comparison still sees each change
        with pytest.raises(AssertionError):
            assert_same(expected, perturbed(found, what))


def test_another_seed_gives_other_samples(engines: tuple[Any, Any]) -> None:
    _, cluster = engines
    first = cluster.generate(PROMPTS, SamplingParams(2, 1.0, max_new_tokens=6, seed=1))
    second = cluster.generate(PROMPTS, SamplingParams(2, 1.0, max_new_tokens=6, seed=2))
    assert [s.token_ids for g in first for s in g.samples] != [
        s.token_ids for g in second for s in g.samples
    ]


def test_greedy_prefill_states_and_risk_equal_one_process(engines: tuple[Any, Any]) -> None:
    local, cluster = engines
    assert cluster.fingerprint == local.fingerprint
    assert (cluster.name, cluster.num_layers) == (local.name, local.num_layers)
    risk = lambda states: float(states.query_token[-1].sum())  # noqa: E731
    expected = local.generate(PROMPTS, SamplingParams(max_new_tokens=5), risk_fn=risk)
    found = cluster.generate(PROMPTS, SamplingParams(max_new_tokens=5), risk_fn=risk)
    assert_same(expected, found)
    assert all(g.risk is not None for g in found)
    for one, many in zip(
        local.hidden_states(PROMPTS, until_layer=1),
        cluster.hidden_states(PROMPTS, until_layer=1),
        strict=True,
    ):
        assert many.query_token.shape == one.query_token.shape == (2, 16)
        assert torch.allclose(many.query_token, one.query_token, atol=STATE_TOLERANCE, rtol=0)


def test_progress_reaches_every_prompt(engines: tuple[Any, Any]) -> None:
    _, cluster = engines
    seen: list[tuple[int, int]] = []
    cluster.generate(
        PROMPTS, SamplingParams(max_new_tokens=2), on_progress=lambda d, t: seen.append((d, t))
    )
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
    expected = HFEngine.load(str(other), batch_size=2).generate(
        PROMPTS, SamplingParams(max_new_tokens=4)
    )
    assert_same(expected, version.generate(PROMPTS, SamplingParams(max_new_tokens=4)))
