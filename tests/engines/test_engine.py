"""The transformers engine on a tiny random Llama: batching, prefill capture, token stats."""

from __future__ import annotations

import pytest
import torch

from engines.base import SamplingParams
from tests.tiny_models import tiny_engine

PROMPTS = ["What is 12 + 35?", "Is there a red circle in the image? Answer yes or no please.", "Hi"]


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    return tiny_engine()


def test_states_alone_equal_states_in_left_padded_batch(engine) -> None:  # type: ignore[no-untyped-def]
    batched = engine.hidden_states(PROMPTS)
    for prompt, in_batch in zip(PROMPTS, batched, strict=True):
        (alone,) = engine.hidden_states([prompt])
        torch.testing.assert_close(in_batch.query_token, alone.query_token, atol=1e-4, rtol=0)
        torch.testing.assert_close(in_batch.prompt_mean, alone.prompt_mean, atol=1e-4, rtol=0)


def test_prefill_capture_equals_a_separate_forward_pass(engine) -> None:  # type: ignore[no-untyped-def]
    generations = engine.generate(PROMPTS, SamplingParams(max_new_tokens=5))
    for prompt, generation in zip(PROMPTS, generations, strict=True):
        batch = engine._encode([prompt])
        with torch.inference_mode():
            out = engine.model(**batch, output_hidden_states=True)
        # HF's last hidden state has the final norm applied; ours are the layer outputs.
        for layer in range(engine.num_layers):
            torch.testing.assert_close(
                generation.states.query_token[layer],
                out.hidden_states[layer][0, -1],
                atol=1e-4,
                rtol=0,
            )
        assert generation.states.query_token.shape == (engine.num_layers + 1, 16)


def test_hidden_states_equal_generation_capture(engine) -> None:  # type: ignore[no-untyped-def]
    captured = engine.generate(PROMPTS, SamplingParams(n=3, temperature=0.9, max_new_tokens=4))
    extracted = engine.hidden_states(PROMPTS)
    for generation, states in zip(captured, extracted, strict=True):
        torch.testing.assert_close(
            generation.states.query_token, states.query_token, atol=1e-4, rtol=0
        )
        torch.testing.assert_close(
            generation.states.prompt_mean, states.prompt_mean, atol=1e-4, rtol=0
        )


def test_token_logprobs_match_a_teacher_forced_pass(engine) -> None:  # type: ignore[no-untyped-def]
    (generation,) = engine.generate(
        [PROMPTS[0]], SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    )
    batch = engine._encode([PROMPTS[0]])
    for sample in generation.samples:
        ids = torch.cat([batch["input_ids"][0], torch.tensor(sample.token_ids)]).unsqueeze(0)
        with torch.inference_mode():
            logp = torch.log_softmax(engine.model(ids).logits[0].float(), -1)
        start = batch["input_ids"].shape[1]
        expected = [logp[start - 1 + i, t].item() for i, t in enumerate(sample.token_ids)]
        assert sample.logprobs == pytest.approx(expected, abs=1e-4)
        assert len(sample.entropies) == len(sample.token_ids)
        assert all(e >= 0 for e in sample.entropies)


def test_generation_is_seeded_and_shaped(engine) -> None:  # type: ignore[no-untyped-def]
    first = engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=7))
    again = engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=7))
    assert [[s.token_ids for s in g.samples] for g in first] == [
        [s.token_ids for s in g.samples] for g in again
    ]
    assert all(len(g.samples) == 2 for g in first)
    for sample in (s for g in first for s in g.samples):
        assert sample.finish_reason in {"stop", "length"}
        assert sample.finish_reason == "stop" or len(sample.token_ids) == 6


def test_greedy_n_copies_one_decode(engine) -> None:  # type: ignore[no-untyped-def]
    (generation,) = engine.generate([PROMPTS[0]], SamplingParams(n=3, max_new_tokens=5))
    assert len({tuple(s.token_ids) for s in generation.samples}) == 1


def test_risk_fn_scores_from_the_prefill(engine) -> None:  # type: ignore[no-untyped-def]
    generations = engine.generate(
        PROMPTS,
        SamplingParams(max_new_tokens=3),
        risk_fn=lambda states: float(torch.sigmoid(states.query_token[-1].sum())),
    )
    for generation in generations:
        assert generation.risk == pytest.approx(
            float(torch.sigmoid(generation.states.query_token[-1].sum()))
        )


def test_no_capture_leaves_states_empty(engine) -> None:  # type: ignore[no-untyped-def]
    generations = engine.generate(PROMPTS, SamplingParams(max_new_tokens=3), capture=False)
    assert all(g.states is None for g in generations)


def test_fingerprint_changes_with_weights() -> None:
    assert tiny_engine(seed=0).fingerprint == tiny_engine(seed=0).fingerprint
    assert tiny_engine(seed=0).fingerprint != tiny_engine(seed=1).fingerprint


def _engine_ending_early():  # type: ignore[no-untyped-def]
    """A tiny engine whose end token is one its greedy answers produce early: rows of a
    batch end at different steps, so the decoder drops rows mid-batch."""
    engine = tiny_engine(seed=1)
    torch.manual_seed(0)
    with torch.no_grad():  # a random-init model says its EOS at once: spread its logits
        engine.model.lm_head.weight.normal_(0.0, 1.0)
    first = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    token = first[0].samples[0].token_ids[1]
    engine.model.generation_config.eos_token_id = token
    return engine, token


def test_greedy_decoding_equals_transformers_generate_when_rows_end_early() -> None:
    engine, end = _engine_ending_early()
    ours = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    assert {len(g.samples[0].token_ids) for g in ours} != {12}, "some row ended early"
    batch = engine._encode(PROMPTS)
    with torch.inference_mode():
        reference = engine.model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=[end, engine.tokenizer.eos_token_id],
            pad_token_id=engine.tokenizer.pad_token_id,
        )[:, batch["input_ids"].shape[1] :]
    for generation, row in zip(ours, reference.tolist(), strict=True):
        # transformers pads a finished row: the answer is up to its first end token, if any
        ends = [i for i, token in enumerate(row) if token in (end, engine.tokenizer.eos_token_id)]
        expected = row[: ends[0] + 1] if ends else row
        assert generation.samples[0].token_ids == expected
        assert generation.samples[0].finish_reason == ("stop" if ends else "length")
        assert ends or len(expected) == 12


def test_sampled_rows_that_end_early_keep_exact_logprobs() -> None:
    engine, _ = _engine_ending_early()
    generations = engine.generate(
        PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=5)
    )
    lengths = {len(s.token_ids) for g in generations for s in g.samples}
    assert len(lengths) > 1, "rows ended at different steps"
    for prompt, generation in zip(PROMPTS, generations, strict=True):
        start = engine._encode([prompt])["input_ids"][0]
        for sample in generation.samples:
            ids = torch.cat([start, torch.tensor(sample.token_ids)]).unsqueeze(0)
            with torch.inference_mode():
                logp = torch.log_softmax(engine.model(ids).logits[0].float(), -1)
            expected = [logp[len(start) - 1 + i, t].item() for i, t in enumerate(sample.token_ids)]
            assert sample.logprobs == pytest.approx(expected, abs=1e-4)


def test_a_prefill_until_a_layer_never_runs_the_layers_above() -> None:
    from engines.hooks import decoder_layers

    engine = tiny_engine()
    layers = decoder_layers(engine.model)
    ran: list[int] = []
    handles = [
        layer.register_forward_hook(lambda *_a, i=i: ran.append(i))
        for i, layer in enumerate(layers)
    ]
    try:
        engine.hidden_states(["What is 1 + 1?"], until_layer=1)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]  # decoder layer 0 is layer 1 of the states (0 = embeddings)
