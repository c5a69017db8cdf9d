"""Acquire: prompts from the train split (and, on request, prompts the model writes
itself), K samples each, with each prompt's pre-generation risk from the current probe."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from agents import learnability
from agents.config import StageConfig
from agents.learnability import Evidence
from agents.planning import RULES_REASON, Bound, Checked, clamp, history_rows, shown_bounds
from agents.records import CycleMetrics, Plan, Stage
from engines.base import (
    Engine,
    LayeredRiskFn,
    ProgressFn,
    PromptStates,
    RiskFn,
    Sample,
    SamplingParams,
)
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
    candidate_factor: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Probe-guided acquisition: a pool of candidate_factor x prompts_per_cycle "
        "train prompts is scored by the probe from prefill alone (the forward pass stops at "
        "the probe's layer), and K samples are drawn only for the prompts whose predicted "
        "risk is nearest 0.5 within [min_risk, max_risk]; the others wait for later cycles. "
        "1: no scoring (a uniform draw).",
    )
    min_risk: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Learnability band, low end: prompts whose pre-generation probe risk is "
        "below are skipped as too easy (0 keeps all).",
    )
    max_risk: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Learnability band, high end: prompts whose probe risk is above are skipped "
        "as hopeless (1 keeps all; the honesty loop keeps them, it needs the always-wrong ones).",
    )

    order: Literal["uniform", "learnability", "thompson"] = Field(
        default="uniform",
        description="Which train prompts to sample: uniform (a fresh seeded draw, or the "
        "probe's risk band with candidate_factor > 1), or by what earlier samples showed: each "
        "prompt of the pool (candidate_factor x prompts_per_cycle fresh ones plus every prompt "
        "sampled before) gets a Beta posterior over its pass rate (prior from the probe's "
        "risk, worth more pseudo-samples the better the probe ranked fresh labels; evidence "
        "from every earlier sample, halved per version change since), and the prompts of "
        "highest expected p(1-p) are drawn (learnability), or of highest p(1-p) of one draw "
        "of p each (thompson).",
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

    def sampling(self, seed: int) -> SamplingParams:
        """The K candidates' sampling settings, seeded by `seed`."""
        return SamplingParams(
            n=self.samples_per_prompt,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=seed,
        )


@dataclass(frozen=True)
class Attempt:
    """One prompt and the samples the model drew for it."""

    item: Item
    samples: tuple[Sample, ...]
    risk: float | None  # the probe's risk from this generation's own prefill
    synthesized: bool = False
    # the prefill states this generation captured (the pass-rate probe's features); not
    # part of the JSON row: they are saved beside it as a feature set
    states: PromptStates | None = field(default=None, compare=False, repr=False)

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
    scored: int = 0  # candidates the probe scored from prefill (0: a uniform draw)
    scoring_seconds: float = 0.0
    # the share of the drawn prompts' groups the posterior expects mixed (order != uniform)
    predicted_mixed_share: float | None = None

    @property
    def items(self) -> list[Item]:
        return self.drawn + self.synthetic


@dataclass(frozen=True)
class PromptHistory:
    """What earlier cycles showed about the train prompts (for `order` learnability and
    thompson): every sampled prompt's evidence, and the probe's skill on fresh labels."""

    evidence: Sequence[Evidence] = ()
    probe_auroc: float | None = None


def cycle_prompts(
    engine: Engine,
    task: Task,
    plan: dict[str, Any],
    *,
    candidate_factor: int,
    cycle: int,
    seed: int,
    risk_fn: RiskFn | None = None,
    order: str = "uniform",
    seen: PromptHistory = PromptHistory(),
    k: int = 4,
) -> CyclePrompts:
    """This cycle's prompts per the acquire plan: a fresh draw of `candidate_factor` times
    the prompts needed from the train split, narrowed by the probe `risk_fn` to the most
    learnable ones (`guided_prompts`), or (`order` learnability/thompson) chosen with the
    prompts sampled before by their pass-rate posteriors (`posterior_prompts`); plus the
    self-instruct prompts the plan asks for (none whose group is held out)."""
    train = task.split("train", seed=seed)
    pool = choose_prompts(train, plan["prompts"] * candidate_factor, cycle=cycle, seed=seed)
    started, predicted = time.perf_counter(), None
    if order == "uniform":
        drawn, scored = guided_prompts(engine, pool, plan, risk_fn)
    else:
        pool = with_seen_prompts(pool, train, seen.evidence)
        drawn, scored, predicted = posterior_prompts(
            engine, pool, plan["prompts"], risk_fn, seen, order=order, k=k, seed=seed + cycle
        )
    scoring_seconds = time.perf_counter() - started if scored else 0.0
    held_out = frozenset(i.group for s in ("dev", "test") for i in task.split(s, seed=seed))
    synthetic = synthesize_items(
        engine, task, train, plan["synthesize"], blocked_groups=held_out, seed=seed + cycle
    )
    notes = [f"self-instruct: kept {len(synthetic)} of {plan['synthesize']} asked"] * bool(
        plan["synthesize"]
    )
    if predicted is not None:
        notes.append(
            f"{order}: {len(drawn)} of {len(pool)} prompts by their pass-rate posterior "
            f"({len(seen.evidence)} earlier groups as evidence, {scored} scored by the probe); "
            f"predicted mixed groups {predicted:.0%}"
        )
    elif scored:
        notes.append(
            f"probe-guided: scored {scored} candidates from prefill, sampling the {len(drawn)} "
            f"nearest risk 0.5 in [{plan['min_risk']:g}, {plan['max_risk']:g}]"
        )
    return CyclePrompts(drawn, synthetic, notes, scored, scoring_seconds, predicted)


def with_seen_prompts(
    pool: Sequence[Item], train: Sequence[Item], evidence: Sequence[Evidence]
) -> list[Item]:
    """The fresh pool and every train prompt sampled before (in train order), once each.

    >>> items = [Item(str(i), f"q{i}", ("a",), str(i)) for i in range(4)]
    >>> [i.id for i in with_seen_prompts(items[:2], items, [Evidence("3", 1, 2), Evidence("0", 0, 2)])]
    ['0', '1', '3']
    """
    ids = {i.id for i in pool}
    seen = {e.prompt_id for e in evidence} - ids
    return [*pool, *(i for i in train if i.id in seen)]


def posterior_prompts(
    engine: Engine,
    pool: Sequence[Item],
    count: int,
    risk_fn: RiskFn | None,
    seen: PromptHistory,
    *,
    order: str,
    k: int,
    seed: int,
) -> tuple[list[Item], int, float]:
    """The `count` prompts of `pool` the posterior (`agents.learnability`) ranks first,
    how many the probe scored for the prior (none when the probe's measured skill gives
    its risk no weight), and the share of their groups of `k` expected mixed."""
    ids = [i.id for i in pool]
    risks: dict[str, float] = {}
    if risk_fn is not None and learnability.prior_strength(seen.probe_auroc, 1.0) > 0:
        states = engine.hidden_states([i.prompt for i in pool], until_layer=probe_depth(risk_fn))
        risks = {pid: risk_fn(s) for pid, s in zip(ids, states, strict=True)}
    found = learnability.posteriors(ids, risks, seen.evidence, probe_auroc=seen.probe_auroc)
    ranking: learnability.Order = "thompson" if order == "thompson" else "learnability"
    chosen = learnability.choose(found, count, order=ranking, seed=seed)
    by_id = {i.id: i for i in pool}
    predicted = learnability.predicted_mixed_share(found, chosen, k)
    return [by_id[pid] for pid in chosen], len(risks), predicted


def sample_cycle(
    engine: Engine,
    prompts: CyclePrompts,
    policy: AcquirePolicy,
    *,
    seed: int,
    cycle: int,
    on_progress: ProgressFn | None = None,
    risk_fn: RiskFn | None = None,
) -> list[Attempt]:
    """K samples of each of the cycle's prompts, with the policy's sampling settings
    (seeded per cycle: `seed + 1000 * cycle`), each prompt's risk from `risk_fn`."""
    return sample_attempts(
        engine,
        prompts.items,
        policy.sampling(seed + 1000 * cycle),
        synthesized=frozenset(i.id for i in prompts.synthetic),
        on_progress=on_progress,
        risk_fn=risk_fn,
    )


def summary(attempts: Sequence[Attempt], k: int) -> tuple[str, dict[str, Any]]:
    """A line for the trace and the numbers behind it.

    >>> summary([], 4)
    ('0 prompts x 4 samples, 0 tokens', {'prompts': 0, 'tokens': 0, 'mean_risk': None})
    """
    tokens = tokens_sampled(attempts)
    return f"{len(attempts)} prompts x {k} samples, {tokens} tokens", {
        "prompts": len(attempts),
        "tokens": tokens,
        "mean_risk": mean_risk(attempts),
    }


def tokens_sampled(attempts: Sequence[Attempt]) -> int:
    """New tokens generated across every sample of every attempt."""
    return sum(len(sample.token_ids) for a in attempts for sample in a.samples)


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
    params: SamplingParams,
    *,
    synthesized: frozenset[str] = frozenset(),
    on_progress: ProgressFn | None = None,
    risk_fn: RiskFn | None = None,
) -> list[Attempt]:
    generations = engine.generate(
        [item.prompt for item in items], params, on_progress=on_progress, risk_fn=risk_fn
    )
    return [
        Attempt(item, tuple(g.samples), g.risk, item.id in synthesized, g.states)
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
        requests,
        SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed),
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


def guided_prompts(
    engine: Engine, pool: Sequence[Item], plan: dict[str, Any], risk_fn: RiskFn | None = None
) -> tuple[list[Item], int]:
    """(the prompts to sample, how many candidates were scored). With a probe (`risk_fn`)
    and a pool larger than the plan's prompts (or a narrowed band), every candidate is
    scored from one prefill that stops at the probe's layer, and `learnable` picks; without
    a probe, the first prompts of the (seeded, random) pool."""
    count, band = plan["prompts"], (plan["min_risk"], plan["max_risk"])
    narrowed = band != (0.0, 1.0)
    if risk_fn is None or (len(pool) <= count and not narrowed):
        return list(pool[:count]), 0
    states = engine.hidden_states([i.prompt for i in pool], until_layer=probe_depth(risk_fn))
    risks = [risk_fn(s) for s in states]
    return learnable(pool, risks, count, *band), len(pool)


def probe_depth(risk_fn: RiskFn) -> int | None:
    """The deepest layer the probe reads (None: unknown, run every layer)."""
    return max(risk_fn.spec.layers) if isinstance(risk_fn, LayeredRiskFn) else None


def learnable(
    pool: Sequence[Item], risks: Sequence[float], count: int, min_risk: float, max_risk: float
) -> list[Item]:
    """Up to `count` items whose risk lies in [min_risk, max_risk], nearest 0.5 first (the
    prompts whose K samples are least likely to all get the same verdict); ties keep pool
    order.

    >>> items = [Item(str(i), f"q{i}", ("a",), str(i)) for i in range(5)]
    >>> [i.id for i in learnable(items, [0.05, 0.9, 0.5, 0.6, 0.99], 2, 0.0, 0.95)]
    ['2', '3']
    >>> [i.id for i in learnable(items, [0.05, 0.9, 0.5, 0.6, 0.99], 9, 0.4, 0.95)]
    ['2', '3', '1']
    """
    ranked = sorted(
        (abs(risk - 0.5), index) for index, risk in enumerate(risks) if min_risk <= risk <= max_risk
    )
    return [pool[index] for _, index in ranked[:count]]


# -- planning: acquire's choices (agents.planning.StagePlanning) ----------------------------


class AcquirePlan(Plan):
    """How much data to acquire this cycle."""

    prompts: int = Field(description="train-split prompts to sample this cycle")
    synthesize: int = Field(
        default=0, description="new prompts the model should write (self-instruct)"
    )
    min_risk: float = Field(
        default=0.0, description="skip prompts whose probe risk is below (0..1)"
    )
    max_risk: float = Field(
        default=1.0, description="skip prompts whose probe risk is above (0..1)"
    )


class AcquireSections(Protocol):
    """The session policy's sections acquire's planning reads."""

    @property
    def acquire(self) -> AcquirePolicy: ...


@dataclass(frozen=True)
class AcquireFacts:
    """What acquire's planning knows besides the policy."""

    cycle: int
    history: Sequence[CycleMetrics]


RISK = Bound(0.0, 1.0, "a risk is in [0, 1]")  # not the policy's: what a risk is


def acquire_bounds(policy: AcquirePolicy) -> dict[str, Bound]:
    """What a planner may ask for: shown to it, and enforced on its proposal."""
    return {
        "prompts": Bound(1, policy.prompts_per_cycle, "acquire.prompts_per_cycle"),
        "synthesize": Bound(0, policy.max_synthesize_prompts, "acquire.max_synthesize_prompts"),
    }


class AcquirePlanning:
    """The prompts to sample, the prompts to write, and the band of risk to keep."""

    stage: Stage = "acquire"
    schema = AcquirePlan
    guide = (
        "Choose how many train prompts to sample this cycle, how many new prompts the model "
        "should write itself, and the band of probe risk (difficulty) to keep."
    )

    def rules(self, policy: AcquireSections, facts: AcquireFacts) -> tuple[dict[str, Any], str]:
        a = policy.acquire
        choice = {
            "prompts": a.prompts_per_cycle,
            "synthesize": a.synthesize_prompts,
            "min_risk": a.min_risk,
            "max_risk": a.max_risk,
        }
        return choice, RULES_REASON

    def situation(
        self, policy: AcquireSections, facts: AcquireFacts, rules: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "cycle": facts.cycle,
            "history": history_rows(facts.history),
            "bounds": shown_bounds(acquire_bounds(policy.acquire)),
            "rules_choice": rules,
        }

    def check(
        self,
        plan: AcquirePlan,
        policy: AcquireSections,
        facts: AcquireFacts,
        rules: Mapping[str, Any],
    ) -> Checked:
        a, notes = policy.acquire, list[str]()
        bounds = acquire_bounds(a) | {"min_risk": RISK, "max_risk": RISK}
        final = {name: clamp(name, getattr(plan, name), b, notes) for name, b in bounds.items()}
        if final["min_risk"] >= final["max_risk"]:
            notes.append(
                f"empty risk band [{final['min_risk']}, {final['max_risk']}] -> the policy's band"
            )
            final.update(min_risk=a.min_risk, max_risk=a.max_risk)
        return Checked(final, notes)


ACQUIRE_PLANNING = AcquirePlanning()
