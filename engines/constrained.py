"""Constrained decoding to a JSON schema, with lm-format-enforcer: at every step of a row,
the tokens that keep its answer a prefix of a JSON document the schema accepts (the end
token only once the document is complete). So even a small model's reply parses: what
`serve` does for a request's `response_format`, and so for planners that talk to it.

The library's transformers integration imports a module transformers 5 moved, so its
tokenizer preparation is done here, the same way (each regular token's text, and whether
it starts a word), once per tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

TokenFilter = Callable[[int, list[int]], Sequence[int]]  # (row, its tokens so far) -> allowed

_PREPARED: dict[int, Any] = {}  # id(tokenizer) -> TokenEnforcerTokenizerData


def tokenizer_data(tokenizer: Any, end_ids: Collection[int]) -> Any:
    """The library's view of `tokenizer` (built once: it decodes every token twice)."""
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
        _PREPARED[key] = TokenEnforcerTokenizerData(
            regular,
            lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
            sorted(end_ids),
            False,
            vocab_size,
        )
    return _PREPARED[key]


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

    data = tokenizer_data(tokenizer, end_ids)
    parsed = json.loads(schema)
    enforcers: dict[int, Any] = {}

    def allowed(row: int, generated: list[int]) -> Sequence[int]:
        if row not in enforcers:
            enforcers[row] = TokenEnforcer(data, JsonSchemaParser(parsed or None))
        prompt = list(prompt_ids[row // copies])
        return list(enforcers[row].get_allowed_tokens(prompt + generated).allowed_tokens)

    return allowed
