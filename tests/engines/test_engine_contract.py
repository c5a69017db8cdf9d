"""The `Engine` contract of engines/base.py, run against every engine.

Each engine comes from a factory `seed -> Engine` (the seed picks the weights) listed in
ENGINES: adding an engine (a Ray cluster engine) is one more `pytest.param` line there,
with its marker (`gpu`, `vllm`) and a skip where its hardware or extra is absent (the vLLM
engine's fails instead in CI: tests/vllm_support.py).
An engine that does not keep part of the contract yet lists the test in its `gaps`, with
the reason: that test is a strict xfail for it, so fixing the engine makes the entry fail
until it is removed.

The prompts end in a number because the probe fake builds its answer from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest
import torch

from engines.base import FEATURE_KINDS, Engine, Generation, PromptStates, Sample, SamplingParams
from tests.probe_fakes import FakeEngine
from tests.tiny_models import tiny_engine
from tests.vllm_support import tiny_vllm_engine

PROMPTS = ["What is 12 + 35?", "Is there a red circle in image 3? Answer yes or no, please.", "7"]
SEED = 11  # sampling seed
WEIGHTS, OTHER_WEIGHTS = 1, 2  # engine seeds


@dataclass(frozen=True)
class EngineCase:
    make: Callable[[int], Engine]  # seed -> engine; engines from equal seeds share weights
    gaps: dict[str, str] = field(default_factory=dict)  # test name -> why it fails for now


def probe_fake(seed: int) -> Engine:
    return FakeEngine(fingerprint=f"fake-fingerprint-{seed}", truncate_every=2)


def tiny_llama_engine(seed: int, device: str = "cpu") -> Engine:
    """batch_size 2: three prompts make two batches; the offsets: prompt-dependent greedy
    answers of several tokens, and samples at T=1 that end at different steps."""
    engine = tiny_engine(seed, batch_size=2, shared_offset=1.0, eos_offset=3.0)
    engine.model.to(device)
    return engine  # type: ignore[no-any-return]


NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"
)
PROBE_FAKE_GAPS = {
    "test_max_new_tokens_bounds_every_sample": "always 4 tokens, whatever the limit",
    "test_finish_reason_length_means_the_limit_was_reached": "'length' after 4 tokens, any limit",
    "test_stop_strings_cut_the_text_and_end_the_sample": "ignores `stop`",
    "test_greedy_is_deterministic_and_ignores_the_seed": "T=0 still draws, by seed",
    "test_tiny_top_p_samples_the_greedy_answer": "ignores `top_p`",
    "test_token_logprobs_and_entropies_are_consistent": "noise logprobs, some above 0",
    "test_logprobs_are_under_the_raw_distribution": "logprobs are noise, not of the tokens",
    "test_on_progress_reports_every_prompt": "never calls `on_progress`",
}
ENGINES = [
    pytest.param(EngineCase(probe_fake, PROBE_FAKE_GAPS), id="probe-fake"),
    pytest.param(EngineCase(tiny_llama_engine), id="hf-tiny-llama"),
    pytest.param(
        EngineCase(partial(tiny_llama_engine, device="cuda")),
        id="hf-tiny-llama-cuda",
        marks=[pytest.mark.gpu, NO_CUDA],
    ),
    # One vLLM engine per seed per process (a start costs tens of seconds here), so
    # `case.make(WEIGHTS)` returns the same engine twice: for vLLM the fingerprint test's
    # twin is the engine itself, its other-weights half still real.
    pytest.param(EngineCase(tiny_vllm_engine), id="vllm-tiny-llama", marks=[pytest.mark.vllm]),
]


@pytest.fixture(scope="module", params=ENGINES)
def case(request: pytest.FixtureRequest) -> EngineCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def engine(case: EngineCase) -> Engine:
    return case.make(WEIGHTS)


@pytest.fixture(autouse=True)
def known_gap(request: pytest.FixtureRequest, case: EngineCase) -> None:
    reason = case.gaps.get(request.node.originalname)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def samples_of(generations: list[Generation]) -> list[Sample]:
    return [sample for generation in generations for sample in generation.samples]


def same_samples(a: list[Sample], b: list[Sample]) -> bool:
    """Equal tokens, texts and finish reasons, and log-probabilities within 1e-5."""
    return len(a) == len(b) and all(
        (x.text, x.token_ids, x.finish_reason) == (y.text, y.token_ids, y.finish_reason)
        and x.logprobs == pytest.approx(y.logprobs, abs=1e-5)
        for x, y in zip(a, b, strict=True)
    )


SAMPLED = SamplingParams(n=4, temperature=1.0, max_new_tokens=6, seed=SEED)


def sampled(engine: Engine, prompts: list[str] = PROMPTS, **changes: Any) -> list[Sample]:
    """Samples at T=1 (n=4, 6 tokens, seed SEED unless changed), prompt-major."""
    return samples_of(engine.generate(prompts, replace(SAMPLED, **changes)))


def greedy(engine: Engine, prompts: list[str] = PROMPTS, **changes: Any) -> list[Sample]:
    return samples_of(engine.generate(prompts, SamplingParams(max_new_tokens=8, **changes)))


# ------------------------------------------------------------------ shape


def test_engine_has_the_protocol_attributes(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert isinstance(engine.name, str) and engine.name
    assert isinstance(engine.num_layers, int) and engine.num_layers >= 1
    assert isinstance(engine.captures_prefill, bool)
    assert not hasattr(engine, "risk_fn")  # a probe is an argument of `generate`, not state


def test_one_generation_per_prompt_in_order_with_n_samples(engine: Engine) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=4, seed=SEED)
    generations = engine.generate(PROMPTS, params)
    assert [g.prompt for g in generations] == PROMPTS
    assert [len(g.samples) for g in generations] == [3, 3, 3]
    assert all(isinstance(s, Sample) for s in samples_of(generations))
    assert all(g.risk is None for g in generations)  # no risk_fn given
    assert engine.generate([], SamplingParams()) == []


def test_each_generation_answers_its_own_prompt(engine: Engine) -> None:
    """Greedy answers in a batch equal the answers to each prompt alone (rows not mixed up)."""
    batched = greedy(engine)
    alone = [sample for prompt in PROMPTS for sample in greedy(engine, [prompt])]
    assert same_samples(batched, alone)
    assert len({(s.text, tuple(s.token_ids)) for s in batched}) > 1  # the rows tell apart


# ------------------------------------------------------------------ limits and stops


@pytest.mark.parametrize("limit", [1, 3])
def test_max_new_tokens_bounds_every_sample(engine: Engine, limit: int) -> None:
    samples = sampled(engine, max_new_tokens=limit)
    assert all(len(s.token_ids) <= limit for s in samples)
    assert any(len(s.token_ids) == limit for s in samples)


def test_finish_reason_length_means_the_limit_was_reached(engine: Engine) -> None:
    samples = sampled(engine, max_new_tokens=6)
    assert {s.finish_reason for s in samples} == {"stop", "length"}  # both occur here
    assert all(len(s.token_ids) == 6 for s in samples if s.finish_reason == "length")
    assert all(1 <= len(s.token_ids) <= 6 for s in samples)


FREE = SamplingParams(temperature=1.0, max_new_tokens=12)


def free_sample_with_a_marker(engine: Engine) -> tuple[int, Sample, str]:
    """(seed, sample, marker): the first seed whose one sample of PROMPTS[0] has an ASCII
    letter or digit after its first character, and that character."""
    for seed in range(20):
        (generation,) = engine.generate(PROMPTS[:1], replace(FREE, seed=seed))
        text = generation.samples[0].text
        marker = next((c for c in text[1:] if c.isascii() and c.isalnum()), None)
        if marker:
            return seed, generation.samples[0], marker
    raise AssertionError("no sample with a letter or digit to stop at")


def test_stop_strings_cut_the_text_and_end_the_sample(engine: Engine) -> None:
    """One prompt, one seeded sample: with a stop string it is the free sample cut before
    the string's first occurrence, and decoding ended there."""
    seed, free, marker = free_sample_with_a_marker(engine)
    (stopped,) = engine.generate(PROMPTS[:1], replace(FREE, seed=seed, stop=("\x00", marker)))
    cut = stopped.samples[0]
    assert cut.text == free.text[: free.text.index(marker)].strip()
    assert cut.finish_reason == "stop"
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    (unmatched,) = engine.generate(PROMPTS[:1], replace(FREE, seed=seed, stop=("\x00",)))
    assert same_samples(unmatched.samples, [free])


# ------------------------------------------------------------------ greedy and seeds


def test_greedy_is_deterministic_and_ignores_the_seed(engine: Engine) -> None:
    first = greedy(engine, n=3, seed=0)
    assert same_samples(first, greedy(engine, n=3, seed=5))
    for i in range(0, len(first), 3):
        assert same_samples(first[i : i + 3], [first[i]] * 3)  # n greedy samples agree
    assert any(len(s.token_ids) > 1 for s in first)


def test_tiny_top_p_samples_the_greedy_answer(engine: Engine) -> None:
    """Nucleus sampling keeps at least the most likely token: top_p near 0 is greedy."""
    assert same_samples(sampled(engine, n=1, max_new_tokens=8, top_p=1e-6), greedy(engine))


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    first = sampled(engine)
    assert same_samples(first, sampled(engine))
    assert not same_samples(first, sampled(engine, seed=SEED + 1))
    for i in range(0, len(first), 4):  # n samples of one prompt differ
        assert not same_samples(first[i : i + 4], [first[i]] * 4)


# ------------------------------------------------------------------ token statistics


def test_token_logprobs_and_entropies_are_consistent(engine: Engine) -> None:
    """One log-probability (<= 0) and one entropy (>= 0) per token; the means are theirs;
    a greedy token's log-probability is at least minus the entropy (p_max >= e^-H)."""
    for sample in sampled(engine) + greedy(engine):
        assert len(sample.logprobs) == len(sample.token_ids) == len(sample.entropies)
        assert all(math.isfinite(lp) and lp <= 0 for lp in sample.logprobs)
        assert all(math.isfinite(h) and h >= 0 for h in sample.entropies)
        assert sample.mean_logprob == pytest.approx(sum(sample.logprobs) / len(sample.logprobs))
        assert sample.mean_entropy == pytest.approx(sum(sample.entropies) / len(sample.entropies))
    for sample in greedy(engine):
        assert all(lp >= -h - 1e-5 for lp, h in zip(sample.logprobs, sample.entropies, strict=True))


def test_logprobs_are_under_the_raw_distribution(engine: Engine) -> None:
    """Where a sample drawn at T=0.5 shares its first k tokens with the greedy answer, its
    first k log-probabilities and k+1 entropies are the greedy answer's: both come from the
    untempered distribution given the same tokens."""
    reference = greedy(engine, PROMPTS[:1])[0]
    shared = 0
    for sample in sampled(engine, PROMPTS[:1], n=16, temperature=0.5, max_new_tokens=8):
        k = next(
            (
                i
                for i, (a, b) in enumerate(zip(sample.token_ids, reference.token_ids, strict=False))
                if a != b
            ),
            min(len(sample.token_ids), len(reference.token_ids)),
        )
        assert sample.logprobs[:k] == pytest.approx(reference.logprobs[:k], abs=1e-4)
        assert sample.entropies[: k + 1] == pytest.approx(reference.entropies[: k + 1], abs=1e-4)
        shared += k
    assert shared > 0


# ------------------------------------------------------------------ prefill states


def check_states(states: PromptStates, engine: Engine, hidden: int) -> None:
    for kind in FEATURE_KINDS:
        tensor = states.feature(kind)
        assert tensor.shape == (engine.num_layers + 1, hidden)  # (L+1, H)
        assert tensor.device.type == "cpu" and tensor.is_floating_point()
        assert bool(torch.isfinite(tensor).all())


def test_hidden_states_are_per_prompt_and_every_layer(engine: Engine) -> None:
    states = engine.hidden_states(PROMPTS)
    assert len(states) == len(PROMPTS)
    hidden = states[0].query_token.shape[-1]
    for one in states:
        check_states(one, engine, hidden)
    assert not torch.equal(states[0].query_token, states[1].query_token)
    assert engine.hidden_states([]) == []


def test_hidden_states_until_a_layer_match_the_full_pass(engine: Engine) -> None:
    """`until_layer` keeps layers 0..until_layer, equal to the full pass's."""
    full = engine.hidden_states(PROMPTS)
    until = engine.num_layers // 2
    partial = engine.hidden_states(PROMPTS, until_layer=until)
    for whole, part in zip(full, partial, strict=True):
        for kind in FEATURE_KINDS:
            assert part.feature(kind).shape[0] == until + 1
            torch.testing.assert_close(part.feature(kind), whole.feature(kind)[: until + 1])


def test_generation_captures_the_prefill_states(engine: Engine) -> None:
    """With `capture` (the default) an engine that captures its prefill returns the states
    `hidden_states` gives, whatever the sampling; one that does not returns none."""
    extracted = engine.hidden_states(PROMPTS)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=SEED)
    generations = engine.generate(PROMPTS, params)
    for generation, states in zip(generations, extracted, strict=True):
        if not engine.captures_prefill:
            assert generation.states is None
            continue
        assert generation.states is not None
        for kind in FEATURE_KINDS:
            torch.testing.assert_close(
                generation.states.feature(kind), states.feature(kind), atol=1e-4, rtol=0
            )
    uncaptured = engine.generate(PROMPTS, SamplingParams(max_new_tokens=3), capture=False)
    assert all(g.states is None for g in uncaptured)


def test_risk_fn_scores_each_generations_own_prefill(engine: Engine) -> None:
    def risk_fn(states: PromptStates) -> float:
        return float(states.query_token[-1].sum())

    generations = engine.generate(PROMPTS, SamplingParams(max_new_tokens=3), risk_fn=risk_fn)
    expected = [risk_fn(states) for states in engine.hidden_states(PROMPTS)]
    assert [g.risk for g in generations] == pytest.approx(expected, abs=1e-3)
    assert len({round(r, 3) for r in expected}) == len(PROMPTS)  # a mix-up would show
    unscored = engine.generate(PROMPTS, SamplingParams(max_new_tokens=3))
    assert all(g.risk is None for g in unscored)  # the probe stayed with that one call


# ------------------------------------------------------------------ identity and progress


def test_fingerprint_names_the_weights(case: EngineCase, engine: Engine) -> None:
    """Same weights, same fingerprint and same outputs; other weights, another fingerprint."""
    twin, other = case.make(WEIGHTS), case.make(OTHER_WEIGHTS)
    assert isinstance(engine.fingerprint, str) and engine.fingerprint
    assert twin.fingerprint == engine.fingerprint != other.fingerprint
    assert same_samples(greedy(twin), greedy(engine))
    assert torch.equal(
        twin.hidden_states(PROMPTS)[0].query_token, engine.hidden_states(PROMPTS)[0].query_token
    )
    assert not torch.equal(
        other.hidden_states(PROMPTS)[0].query_token, engine.hidden_states(PROMPTS)[0].query_token
    )


def test_on_progress_reports_every_prompt(engine: Engine) -> None:
    """(done, total) calls: total is the prompt count, done never falls and ends at total."""
    by_generate: list[tuple[int, int]] = []
    by_hidden_states: list[tuple[int, int]] = []
    engine.generate(
        PROMPTS, SamplingParams(max_new_tokens=2), on_progress=lambda *c: by_generate.append(c)
    )
    engine.hidden_states(PROMPTS, on_progress=lambda *c: by_hidden_states.append(c))
    for calls in (by_generate, by_hidden_states):
        assert calls and calls[-1] == (len(PROMPTS), len(PROMPTS))
        assert all(total == len(PROMPTS) for _, total in calls)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
