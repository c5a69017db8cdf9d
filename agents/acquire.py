"""Acquire: prompts from the train split (and, on request, prompts the model writes
itself), K samples each, with each prompt's pre-generation risk from the current probe."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engines.base import Engine, ProgressFn, Sample
from tasks.base import Item, Task


@dataclass(frozen=True)
class Attempt:
    """One prompt and the samples the model drew for it."""

    item: Item
    samples: tuple[Sample, ...]
    risk: float | None  # the probe's risk from this generation's own prefill
    synthesized: bool = False


def choose_prompts(train: Sequence[Item], count: int, *, cycle: int, seed: int) -> list[Item]:
    """A fresh seeded draw of train items each cycle (without replacement within a cycle).

    >>> items = [Item(str(i), f"q{i}", ("a",), str(i)) for i in range(10)]
    >>> [i.id for i in choose_prompts(items, 3, cycle=1, seed=0)] == [
    ...     i.id for i in choose_prompts(items, 3, cycle=1, seed=0)]
    True
    >>> len(choose_prompts(items, 30, cycle=1, seed=0))
    10
    """
    rng = random.Random(f"{seed}:{cycle}")
    return rng.sample(list(train), min(count, len(train)))


def sample_attempts(
    engine: Engine,
    items: Sequence[Item],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    synthesized: frozenset[str] = frozenset(),
    on_progress: ProgressFn | None = None,
) -> list[Attempt]:
    generations = engine.generate(
        [item.prompt for item in items],
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        on_progress=on_progress,
    )
    return [
        Attempt(item, tuple(g.samples), g.risk, item.id in synthesized)
        for item, g in zip(items, generations, strict=True)
    ]


SELF_INSTRUCT = (
    "Here are example questions:\n{examples}\nWrite one new question of the same kind. "
    "Reply with the question only."
)


def synthesize_items(
    engine: Engine,
    task: Task,
    seeds: Sequence[Item],
    count: int,
    *,
    blocked_groups: frozenset[str],
    seed: int,
    max_new_tokens: int = 32,
) -> list[Item]:
    """Self-instruct: the model writes new prompts from seed examples. A prompt is kept only
    when the task's oracle can label it and its group is not held out (dev/test)."""
    if count <= 0 or task.oracle is None or not seeds:
        return []
    rng = random.Random(seed)
    requests = [
        SELF_INSTRUCT.format(
            examples="\n".join(f"- {s.prompt}" for s in rng.sample(list(seeds), min(3, len(seeds))))
        )
        for _ in range(count * 2)  # about half of what a small model writes is unusable
    ]
    generations = engine.generate(
        requests, temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed
    )
    kept: dict[str, Item] = {}
    for generation in generations:
        prompt = first_question(generation.samples[0].text)
        labelled = task.oracle(prompt) if prompt else None
        if labelled is None or labelled.group in blocked_groups or labelled.prompt in kept:
            continue
        kept[labelled.prompt] = Item(
            f"synth-{seed}-{len(kept)}", labelled.prompt, labelled.answers, labelled.group
        )
        if len(kept) == count:
            break
    return list(kept.values())


def first_question(text: str) -> str | None:
    """The first line that reads as a question.

    >>> first_question("Sure! What is 12 + 7?\\nMore text")
    'What is 12 + 7?'
    >>> first_question("no question here") is None
    True
    """
    for line in text.splitlines():
        match = re.search(r"([A-Z][^?.!]*\?)", line.strip().lstrip("-* "))
        if match:
            return match.group(1).strip()
    return None


def within_risk_band(
    engine: Engine, pool: Sequence[Item], min_risk: float, max_risk: float, count: int
) -> list[Item]:
    """Up to `count` items whose pre-generation risk lies in [min_risk, max_risk] (the
    difficulty band), from one prefill-only pass over the pool. With no probe attached, or
    the full band, the first `count` of the pool."""
    if engine.risk_fn is None or (min_risk <= 0.0 and max_risk >= 1.0):
        return list(pool[:count])
    risks = [engine.risk_fn(states) for states in engine.hidden_states([i.prompt for i in pool])]
    return [item for item, risk in zip(pool, risks, strict=True) if min_risk <= risk <= max_risk][
        :count
    ]
