"""Batched decoding over a KV cache that drops a row as soon as it finishes.

`model.generate` keeps every row of a batch until the longest one is done, so a batch of
128 samples where one rambles to the token limit costs 128 rows x the limit. Here a row
leaves the batch (and the cache) at its end-of-sequence token or stop string, and each
prompt is prefilled once however many samples it gets (the cache is copied afterwards).
Per-token log-probabilities and entropies come from the same logits, under the raw
(untempered) distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel

from engines.base import SamplingParams


@dataclass
class DecodedRow:
    token_ids: list[int] = field(default_factory=list)  # up to and including the end token
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    stopped: bool = False  # ended by an end token or a stop string, not by the limit


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits outside the smallest set of tokens whose probability reaches `top_p` set to
    -inf (the most likely token always stays), as transformers' `TopPLogitsWarper`.

    >>> logits = torch.tensor([[2.0, 1.0, 0.0, -5.0]])  # probabilities .665 .245 .090 .001
    >>> top_p_filter(logits, 0.6).isinf().tolist()
    [[False, True, True, True]]
    >>> top_p_filter(logits, 0.7).isinf().tolist()
    [[False, False, True, True]]
    """
    if top_p >= 1.0:
        return logits
    ascending, order = torch.sort(logits, dim=-1)  # (A, V)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - top_p
    drop_sorted[..., -1] = False  # keep at least the most likely token
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_tokens(
    logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    """(A,) next tokens from (A, V) logits."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    warped = top_p_filter(logits / sampling.temperature, sampling.top_p)
    return torch.multinomial(warped.softmax(dim=-1), 1, generator=generator).squeeze(1)


def _forward_kwargs(model: PreTrainedModel) -> dict[str, int]:
    """Ask for the last position's logits only, where the model supports it."""
    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if accepts else {}


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids of left-padded prompts: real tokens count from 0, as `generate`
    numbers them.

    >>> prompt_positions(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    """
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def prefill(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, DynamicCache]:
    """One forward pass over left-padded prompts: (B, V) next-token logits and the cache."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=prompt_positions(attention_mask),
        past_key_values=DynamicCache(config=model.config),
        use_cache=True,
        **_forward_kwargs(model),
    )
    return output.logits[:, -1, :], output.past_key_values


def decode(
    model: PreTrainedModel,
    logits: torch.Tensor,
    cache: DynamicCache,
    attention_mask: torch.Tensor,
    *,
    copies: int,
    sampling: SamplingParams,
    end_ids: Collection[int],
    generator: torch.Generator | None = None,
    is_stopped: Callable[[list[int]], bool] | None = None,
    allowed: Callable[[int, list[int]], Sequence[int]] | None = None,
) -> list[DecodedRow]:
    """Decode `copies` rows per prompt from `prefill`'s logits and cache (prompt-major:
    rows i*copies .. i*copies+copies-1 belong to prompt i). Finished rows leave the batch.
    `allowed(row, its tokens so far)`: the tokens a row may take next (constrained
    decoding); the logprobs and entropies stay those of the raw distribution."""
    if copies > 1:
        cache.batch_repeat_interleave(copies)
        logits = logits.repeat_interleave(copies, 0)
        attention_mask = attention_mask.repeat_interleave(copies, 0)
    rows = [DecodedRow() for _ in range(logits.shape[0])]
    active = list(range(len(rows)))  # rows still decoding, in cache order
    end = torch.tensor(sorted(end_ids), dtype=torch.long, device=logits.device)
    extra = _forward_kwargs(model)
    for step in range(sampling.max_new_tokens):
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)  # (A, V)
        entropy = -(logp.exp() * logp).sum(-1)  # (A,)
        chosen = choose_tokens(
            logits if allowed is None else only_allowed(logits, active, rows, allowed),
            sampling,
            generator,
        )  # (A,)
        chosen_logp = logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
        ended = torch.isin(chosen, end).tolist()
        for slot, (row_index, token, lp, h) in enumerate(
            zip(active, chosen.tolist(), chosen_logp.tolist(), entropy.tolist(), strict=True)
        ):
            row = rows[row_index]
            row.token_ids.append(token)
            row.logprobs.append(lp)
            row.entropies.append(h)
            row.stopped = ended[slot] or (is_stopped is not None and is_stopped(row.token_ids))
        keep = [slot for slot, row_index in enumerate(active) if not rows[row_index].stopped]
        if not keep or step == sampling.max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long, device=logits.device)
            cache.batch_select_indices(index)
            attention_mask, chosen = attention_mask[index], chosen[index]
            active = [active[slot] for slot in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), 1)], 1)
        output = model(
            input_ids=chosen.unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=attention_mask.sum(-1, keepdim=True) - 1,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        logits = output.logits[:, -1, :]
    return rows


def only_allowed(
    logits: torch.Tensor,
    active: Sequence[int],
    rows: Sequence[DecodedRow],
    allowed: Callable[[int, list[int]], Sequence[int]],
) -> torch.Tensor:
    """(A, V) logits with every token a row may not take next at -inf."""
    masked = torch.full_like(logits, float("-inf"))
    for slot, row_index in enumerate(active):
        ids = torch.tensor(list(allowed(row_index, rows[row_index].token_ids)), dtype=torch.long)
        masked[slot, ids] = logits[slot, ids]
    return masked
