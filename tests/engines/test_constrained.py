"""Constrained decoding to a JSON schema (`engines.constrained`): the tokens a row may take
next, with the tiny tokenizer and the real lm-format-enforcer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engines.constrained import MAX_NUMBER_CHARS, json_schema_filter
from tests.tiny_models import tiny_tokenizer

COUNT = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


def count_filter(tokenizer: Any) -> Any:
    """The filter of one answer to "How many?" under `COUNT`."""
    prompt = tokenizer.encode("How many?", add_special_tokens=False)
    return json_schema_filter(tokenizer, {tokenizer.eos_token_id}, COUNT, [prompt], copies=1)


def forced(allowed: Any, tokens: list[int]) -> list[int]:
    """`tokens` decoded one at a time, as the engine asks (the filter reads the first ask as
    the prompt's), each one allowed."""
    generated: list[int] = []
    for token in tokens:
        assert token in allowed(0, generated)
        generated.append(token)
    return generated


def digit_lover(tokenizer: Any, steps: int = 96) -> str:
    """The answer of a model that writes a digit whenever one is allowed (what the default
    model did for an integer field: "1000..." until its budget ran out), then closes."""
    end, allowed = tokenizer.eos_token_id, count_filter(tokenizer)
    generated = forced(allowed, tokenizer.encode('{"n": ', add_special_tokens=False))
    texts = {token: tokenizer.decode([token]) for token in range(len(tokenizer))}
    for _ in range(steps):
        choices = list(allowed(0, generated))
        digits = [t for t in choices if texts[t] and texts[t][0].isdigit()]
        closing = [t for t in choices if texts[t] == "}"]
        if not digits and not closing and end in choices:
            break
        generated.append((digits or closing or choices)[0])
    return tokenizer.decode(generated)


def test_a_number_ends_after_its_longest_form(tokenizer: Any) -> None:
    """Fails without the cap: the digits go on for all 96 steps and the answer never parses."""
    answer = digit_lover(tokenizer)
    number = json.loads(answer)["n"]
    assert 1 <= len(str(number)) <= MAX_NUMBER_CHARS, answer


def test_a_short_number_may_go_on(tokenizer: Any) -> None:
    allowed = count_filter(tokenizer)
    generated = forced(allowed, tokenizer.encode('{"n": 12', add_special_tokens=False))
    choices = {tokenizer.decode([token]) for token in allowed(0, generated)}
    assert {"3", "}"} <= choices
