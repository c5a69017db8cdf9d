"""Acquire: prompts from the train split (and, on request, prompts the model writes
itself), K samples each, with each prompt's pre-generation risk from the current probe."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field, model_validator

from agents.config import StageConfig
from engines.base import Engine, ProgressFn, Sample
from tasks.base import Item, Task


class AcquirePolicy(StageConfig):
    """Acquire: prompts from the task's train split (and self-instruct), K samples each."""

    prompts_per_cycle: int = Field(
        default=64,
        ge=1,
        description="Train-split prompts drawn per cycle; also the most a planner may ask for.",
    )
    samples_per_prompt: int = Field(
        default=4, ge=1, description="Sampled candidates (K) per prompt."
    )
    temperature: float = Field(
        default=0.8, ge=0.0, le=2.0, description="Sampling temperature for the K candidates."
    )
    top_p: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass for the K candidates."
    )
    max_new_tokens: int = Field(
        default=96,
        ge=1,
        description="Token budget per sample; too small and answers are cut before they finish.",
    )
    synthesize_prompts: int = Field(
        default=0,
        ge=0,
        description="New prompts the model writes per cycle (self-instruct); 0 turns it off.",
    )
    max_synthesize_prompts: int = Field(
        default=32,
        ge=0,
        description="The most self-instruct prompts a planner may ask for in one cycle.",
    )
    min_risk: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Difficulty band, low end: prompts whose pre-generation probe risk is "
        "below are skipped as too easy (0 keeps all).",
    )
    max_risk: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Difficulty band, high end: prompts whose probe risk is above are skipped as "
        "hopeless (1 keeps all).",
    )

    @model_validator(mode="after")
    def _check(self) -> AcquirePolicy:
        if self.min_risk >= self.max_risk:
            raise ValueError(
                f"acquire.min_risk ({self.min_risk}) must be below acquire.max_risk "
                f"({self.max_risk}): widen the difficulty band"
            )
        if self.synthesize_prompts > self.max_synthesize_prompts:
            raise ValueError(
                f"acquire.synthesize_prompts ({self.synthesize_prompts}) exceeds "
                f"acquire.max_synthesize_prompts ({self.max_synthesize_prompts}): raise the cap "
                "or ask for fewer"
            )
        if self.temperature == 0 and self.samples_per_prompt > 1:
            raise ValueError(
                "acquire.temperature 0 makes the K samples identical: set acquire.temperature > 0 "
                "or acquire.samples_per_prompt=1"
            )
        return self


@dataclass(frozen=True)
class Attempt:
    """One prompt and the samples the model drew for it."""

    item: Item
    samples: tuple[Sample, ...]
    risk: float | None  # the probe's risk from this generation's own prefill
    synthesized: bool = False

    def to_row(self) -> dict[str, Any]:
        """The attempt as one JSON-ready row (the session's `attempts.jsonl`)."""
        item = self.item
        return {
            "item": {
                "id": item.id,
                "prompt": item.prompt,
                "answers": list(item.answers),
                "group": item.group,
            },
            "samples": [asdict(s) for s in self.samples],
            "risk": self.risk,
            "synthesized": self.synthesized,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attempt:
        raw = row["item"]
        item = Item(raw["id"], raw["prompt"], tuple(raw["answers"]), raw["group"])
        return cls(
            item, tuple(Sample(**s) for s in row["samples"]), row["risk"], row["synthesized"]
        )


@dataclass(frozen=True)
class CyclePrompts:
    """The prompts one cycle samples: drawn from the train split, and written by the model."""

    drawn: list[Item]
    synthetic: list[Item]
    notes: list[str]  # what is worth a line in the trace

    @property
    def items(self) -> list[Item]:
        return self.drawn + self.synthetic


def cycle_prompts(
    engine: Engine, task: Task, plan: dict[str, Any], *, cycle: int, seed: int
) -> CyclePrompts:
    """This cycle's prompts per the acquire plan: a fresh draw from the train split (twice
    what is needed, so the risk band can choose), kept within the band, plus the
    self-instruct prompts the plan asks for (none whose group is held out)."""
    train = task.split("train", seed=seed)
    pool = choose_prompts(train, plan["prompts"] * 2, cycle=cycle, seed=seed)
    drawn = within_risk_band(engine, pool, plan["min_risk"], plan["max_risk"], plan["prompts"])
    held_out = frozenset(i.group for s in ("dev", "test") for i in task.split(s, seed=seed))
    synthetic = synthesize_items(
        engine, task, train, plan["synthesize"], blocked_groups=held_out, seed=seed + cycle
    )
    notes = (
        [f"self-instruct: kept {len(synthetic)} of {plan['synthesize']} asked"]
        if plan["synthesize"]
        else []
    )
    return CyclePrompts(drawn, synthetic, notes)


def sample_cycle(
    engine: Engine,
    prompts: CyclePrompts,
    policy: AcquirePolicy,
    *,
    seed: int,
    cycle: int,
    on_progress: ProgressFn | None = None,
) -> list[Attempt]:
    """K samples of each of the cycle's prompts, with the policy's sampling settings
    (seeded per cycle: `seed + 1000 * cycle`)."""
    return sample_attempts(
        engine,
        prompts.items,
        n=policy.samples_per_prompt,
        temperature=policy.temperature,
        top_p=policy.top_p,
        max_new_tokens=policy.max_new_tokens,
        seed=seed + 1000 * cycle,
        synthesized=frozenset(i.id for i in prompts.synthetic),
        on_progress=on_progress,
    )


def summary(attempts: Sequence[Attempt], k: int) -> tuple[str, dict[str, Any]]:
    """A line for the trace and the numbers behind it.

    >>> summary([], 4)
    ('0 prompts x 4 samples', {'prompts': 0, 'mean_risk': None})
    """
    return f"{len(attempts)} prompts x {k} samples", {
        "prompts": len(attempts),
        "mean_risk": mean_risk(attempts),
    }


def mean_risk(attempts: Sequence[Attempt]) -> float | None:
    """The mean pre-generation risk of the attempts that have one (None: no probe).

    >>> mean_risk([]) is None
    True
    """
    risks = [a.risk for a in attempts if a.risk is not None]
    return sum(risks) / len(risks) if risks else None


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
