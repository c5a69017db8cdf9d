"""Constrained decoding to a JSON schema, with lm-format-enforcer: at every step of a row,
the tokens that keep its answer a prefix of a JSON document the schema accepts (the end
token only once the document is complete). So even a small model's reply parses: what
`serve` does for a request's `response_format`, and so for planners that talk to it.

The library's transformers integration imports a module transformers 5 moved, so its
tokenizer preparation is done here, the same way (each regular token's text, and whether
it starts a word), once per tokenizer.

The library bounds strings (`maxLength`) and arrays, not numbers: asked for an integer, the
default model wrote "1000..." until its token budget ran out, and the reply did not parse.
So a number ends after `MAX_NUMBER_CHARS` characters: past that, a token that would go on
with it is not allowed (unless nothing else is)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TokenFilter = Callable[[int, list[int]], Sequence[int]]  # (row, its tokens so far) -> allowed

MAX_NUMBER_CHARS = 24  # the longest float64 repr: "-1.2345678901234567e-308"
NUMBER_CHARS = "0123456789.eE+-"


@dataclass(frozen=True)
class Prepared:
    """A tokenizer as the filter reads it, built once (it decodes every token twice)."""

    data: Any  # the library's TokenEnforcerTokenizerData
    texts: Mapping[int, str]  # each regular token's text
    numeric: frozenset[int]  # the regular tokens whose text starts as a number goes on


_PREPARED: dict[int, Prepared] = {}  # id(tokenizer) -> its preparation


def prepared(tokenizer: Any, end_ids: Collection[int]) -> Prepared:
    """The library's view of `tokenizer`, with each token's text."""
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    key = id(tokenizer)
    if key not in _PREPARED:
        vocab_size = len(tokenizer)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for token in range(vocab_size):
            if token in special:
                continue
            after_zero = tokenizer.decode([zero, token])[1:]  # keeps a word start's space
            alone = tokenizer.decode([token])
            regular.append((token, after_zero, len(after_zero) > len(alone)))
        data = TokenEnforcerTokenizerData(
            regular,
            lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
            sorted(end_ids),
            False,
            vocab_size,
        )
        texts = {token: text for token, text, _ in regular}
        numeric = frozenset(t for t, text in texts.items() if text[:1] and text[0] in NUMBER_CHARS)
        _PREPARED[key] = Prepared(data, texts, numeric)
    return _PREPARED[key]


def number_run(texts: Mapping[int, str], generated: Sequence[int]) -> int:
    """How many characters a number could have at the end of `generated` (the trailing
    characters that a JSON number is made of).

    >>> number_run({1: '{"n": ', 2: "100", 3: "00"}, [1, 2, 3])
    5
    >>> number_run({1: '{"n": ', 2: "1", 3: ","}, [1, 2, 3])
    0
    """
    run = 0
    for token in reversed(generated):
        text = texts.get(token, "")
        rest = text.rstrip(NUMBER_CHARS)
        run += len(text) - len(rest)
        if rest:
            break
    return run


def json_schema_filter(
    tokenizer: Any,
    end_ids: Collection[int],
    schema: str,
    prompt_ids: Sequence[Sequence[int]],
    copies: int,
) -> TokenFilter:
    """The allowed next tokens of each decoded row (rows are prompt-major, `copies` per
    prompt) for answers that are JSON documents of `schema` (a JSON Schema as a string;
    "{}": any JSON object)."""
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    tokens = prepared(tokenizer, end_ids)
    parsed = json.loads(schema)
    enforcers: dict[int, Any] = {}

    def allowed(row: int, generated: list[int]) -> Sequence[int]:
        if row not in enforcers:
            enforcers[row] = TokenEnforcer(tokens.data, JsonSchemaParser(parsed or None))
        prompt = list(prompt_ids[row // copies])
        choices = enforcers[row].get_allowed_tokens(prompt + generated).allowed_tokens
        if number_run(tokens.texts, generated) >= MAX_NUMBER_CHARS:
            ending = [token for token in choices if token not in tokens.numeric]
            choices = ending or choices
        return list(choices)

    return allowed
