"""Select: label samples, choose what to train on, build SFT examples and preference pairs.

Strategies are pure functions over labelled attempts, named in `STRATEGIES`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field

from agents.acquire import AcquirePolicy, Attempt
from agents.config import StageConfig
from agents.monitor import MonitorPolicy
from agents.planning import RULES_REASON, Bound, Checked, clamp, history_rows, shown_bounds
from agents.records import CycleMetrics, Plan, Stage
from agents.refine import ABSTAIN_TEXT, RefinePolicy, is_abstention
from engines.base import Engine, Sample, SamplingParams
from tasks.base import Task
from tasks.verifiers import normalize, yes_no_match

SelectStrategy = Literal["correct_only", "risk_weighted", "self_judge", "learn_abstention"]


class SelectPolicy(StageConfig):
    """Select: verifier (or self-judge) labels -> an SFT set and preference pairs."""

    strategy: SelectStrategy = Field(
        default="correct_only",
        description="correct_only: rejection sampling (STaR); risk_weighted: prefer solved "
        "prompts the probe rates uncertain; self_judge: the model judges its own samples "
        "(no verifier); learn_abstention (R-Tuning): prompts at or below "
        "abstain_max_pass_rate are taught refine.abstention_text, the others a correct sample.",
    )
    abstain_max_pass_rate: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="learn_abstention: a prompt whose answered samples are right at most this "
        "often (abstentions left out of the rate) is taught to abstain (0: only prompts no "
        "sample got right).",
    )
    abstain_max_share: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="learn_abstention: the most of a cycle's SFT examples that may be the "
        "abstention text; beyond it the surest unknowns (lowest pass rate, then highest risk) "
        "are kept and the rest left out, so a mostly-unknown pool does not teach the model to "
        "abstain on everything (1: no cap).",
    )
    max_per_prompt: int = Field(
        default=2,
        ge=1,
        description="Distinct correct samples kept per prompt (at most samples_per_prompt).",
    )
    dedupe: bool = Field(
        default=True, description="Drop examples whose normalized prompt and completion repeat."
    )
    min_examples: int = Field(
        default=8,
        ge=1,
        description="Fewer selected examples than this (optimize.method grpo: fewer prompts "
        "whose samples got different rewards) and the cycle skips optimize.",
    )
    pairs: bool = Field(
        default=True,
        description="Build preference pairs (a correct and an incorrect sample of one prompt); "
        "DPO needs them.",
    )


@dataclass(frozen=True)
class SFTExample:
    prompt: str
    completion: str
    item_id: str
    risk: float | None = None


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    item_id: str


@dataclass(frozen=True)
class Labelled:
    attempt: Attempt
    correct: tuple[bool, ...]  # one per sample

    @property
    def pass_rate(self) -> float:
        return sum(self.correct) / max(len(self.correct), 1)


def label_with_verifier(task: Task, attempts: Sequence[Attempt]) -> list[Labelled]:
    """Verifier labels; a sample cut off at the token budget never counts as correct."""
    return [
        Labelled(
            a, tuple(s.finish_reason == "stop" and task.verify(s.text, a.item) for s in a.samples)
        )
        for a in attempts
    ]


JUDGE_PROMPT = (
    "Question: {question}\nProposed answer: {answer}\n"
    "Is the proposed answer correct? Reply with yes or no."
)


def label_with_self_judge(
    engine: Engine, attempts: Sequence[Attempt], *, max_new_tokens: int = 4
) -> list[Labelled]:
    """Self-Rewarding style: the model judges its own samples (for tasks with no verifier)."""
    flat = [(a, s) for a in attempts for s in a.samples]
    prompts = [JUDGE_PROMPT.format(question=a.item.prompt, answer=s.text) for a, s in flat]
    verdicts = engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens))
    judged = iter(yes_no_match(v.samples[0].text, ["yes"]) for v in verdicts)
    return [
        Labelled(a, tuple(next(judged) and s.finish_reason == "stop" for s in a.samples))
        for a in attempts
    ]


def distinct_correct(labelled: Labelled, limit: int) -> list[Sample]:
    """Up to `limit` correct samples with distinct normalized texts."""
    seen: set[str] = set()
    kept: list[Sample] = []
    for sample, ok in zip(labelled.attempt.samples, labelled.correct, strict=True):
        key = normalize(sample.text)
        if ok and key not in seen:
            seen.add(key)
            kept.append(sample)
    return kept[:limit]


def correct_only(labelled: Sequence[Labelled], max_per_prompt: int) -> list[SFTExample]:
    """Rejection sampling (STaR): every prompt's distinct correct samples."""
    return [
        SFTExample(lab.attempt.item.prompt, sample.text, lab.attempt.item.id, lab.attempt.risk)
        for lab in labelled
        for sample in distinct_correct(lab, max_per_prompt)
    ]


def risk_weighted(labelled: Sequence[Labelled], max_per_prompt: int) -> list[SFTExample]:
    """Prefer prompts the probe rates uncertain that the model still solved: solved prompts
    ordered by risk (highest first), and the riskier half given twice the samples.

    >>> from tasks.base import Item
    >>> s = Sample("4", [1], [-0.1], [0.1], "stop")
    >>> lab = lambda i, r: Labelled(Attempt(Item(i, "2+2?", ("4",), i), (s,), r), (True,))
    >>> [e.item_id for e in risk_weighted([lab("low", 0.1), lab("high", 0.9)], 1)]
    ['high', 'low']
    """
    solved = sorted(
        (lab for lab in labelled if any(lab.correct)), key=lambda lab: -(lab.attempt.risk or 0.0)
    )
    riskier = {id(lab) for lab in solved[: len(solved) // 2]}
    return [
        SFTExample(lab.attempt.item.prompt, sample.text, lab.attempt.item.id, lab.attempt.risk)
        for lab in solved
        for sample in distinct_correct(lab, max_per_prompt * (2 if id(lab) in riskier else 1))
    ]


@dataclass(frozen=True)
class Abstention:
    """learn_abstention's rule: a prompt whose answered samples are right at most
    `max_pass_rate` of the time is taught `text` (the policy's `refine.abstention_text`)."""

    text: str = ABSTAIN_TEXT
    max_pass_rate: float = 0.0
    max_share: float = 1.0  # of the SFT examples that may be abstentions

    def answered_pass_rate(self, labelled: Labelled) -> float | None:
        """Share of the prompt's answered samples (abstentions left out) that are correct;
        None when every sample abstained.

        >>> from tasks.base import Item
        >>> s = lambda t: Sample(t, [1], [-0.1], [0.1], "stop")
        >>> a = Attempt(Item("1", "q", ("a",), "1"), (s("a"), s("b"), s(ABSTAIN_TEXT)), None)
        >>> Abstention().answered_pass_rate(Labelled(a, (True, False, False)))
        0.5
        """
        answered = [
            ok
            for sample, ok in zip(labelled.attempt.samples, labelled.correct, strict=True)
            if not self.abstains(sample)
        ]
        return sum(answered) / len(answered) if answered else None

    def abstains(self, sample: Sample) -> bool:
        return is_abstention(sample.text, (self.text,))

    def unknown(self, labelled: Labelled) -> bool:
        """The model does not know this prompt: it is taught to abstain."""
        rate = self.answered_pass_rate(labelled)
        return rate is None or rate <= self.max_pass_rate


def learn_abstention(
    labelled: Sequence[Labelled], max_per_prompt: int, rule: Abstention
) -> list[SFTExample]:
    """R-Tuning: each prompt the model does not know (`rule.unknown`) is taught the
    abstention text; each other prompt its distinct correct samples. At most
    `rule.max_share` of the examples abstain: the surest unknowns are kept.

    >>> from tasks.base import Item
    >>> s = lambda t: Sample(t, [1], [-0.1], [0.1], "stop")
    >>> lab = lambda i, *ok: Labelled(
    ...     Attempt(Item(i, f"q{i}", ("a",), i), tuple(s("a" if o else "b") for o in ok), None), ok)
    >>> [(e.item_id, e.completion) for e in learn_abstention(
    ...     [lab("known", True, False), lab("unknown", False, False)], 1, Abstention())]
    [('known', 'a'), ('unknown', "I don't know.")]
    """
    answers = {
        id(lab): [
            SFTExample(lab.attempt.item.prompt, sample.text, lab.attempt.item.id, lab.attempt.risk)
            for sample in distinct_correct(lab, max_per_prompt)
            if not rule.abstains(sample)
        ]
        for lab in labelled
        if not rule.unknown(lab)
    }
    unknown = [lab for lab in labelled if rule.unknown(lab)]
    taught = {id(lab) for lab in surest_unknowns(unknown, rule, sum(map(len, answers.values())))}
    examples = []
    for lab in labelled:  # in the prompts' order
        item = lab.attempt.item
        if id(lab) in taught:
            examples.append(SFTExample(item.prompt, rule.text, item.id, lab.attempt.risk))
        else:
            examples += answers.get(id(lab), [])
    return examples


def surest_unknowns(unknown: Sequence[Labelled], rule: Abstention, answered: int) -> list[Labelled]:
    """The unknown prompts to teach abstention: all of them, or, when they would be more
    than `rule.max_share` of the examples beside `answered` answers, the surest ones (lowest
    answered pass rate, then highest probe risk).

    >>> from tasks.base import Item
    >>> s = lambda t: Sample(t, [1], [-0.1], [0.1], "stop")
    >>> lab = lambda i, risk, *ok: Labelled(
    ...     Attempt(Item(i, "q", ("a",), i), tuple(s("a" if o else "b") for o in ok), risk), ok)
    >>> labs = [lab("u1", 0.2, False, False), lab("u2", 0.9, False, False), lab("u3", 0.9, True, False, False)]
    >>> [l.attempt.item.id for l in surest_unknowns(labs, Abstention(max_pass_rate=0.5, max_share=0.5), 2)]
    ['u2', 'u1']
    """
    if rule.max_share >= 1.0:
        return list(unknown)
    most = math.floor(rule.max_share / (1.0 - rule.max_share) * answered + 1e-9)

    def sureness(lab: Labelled) -> tuple[float, float]:
        rate = rule.answered_pass_rate(lab)
        risk = lab.attempt.risk
        return (0.0 if rate is None else rate, -(0.5 if risk is None else risk))

    return sorted(unknown, key=sureness)[:most]


def abstention_pairs(labelled: Sequence[Labelled], rule: Abstention) -> list[PreferencePair]:
    """One pair per prompt: abstaining over a wrong answer where the model does not know
    the prompt, a correct answer over abstaining where it does."""
    pairs = []
    for lab in labelled:
        item, answered = lab.attempt.item, _answered(lab, rule)
        wrong = [sample.text for sample, ok in answered if not ok]
        right = [sample.text for sample, ok in answered if ok]
        if rule.unknown(lab) and wrong:
            pairs.append(PreferencePair(item.prompt, rule.text, wrong[0], item.id))
        elif not rule.unknown(lab) and right:
            pairs.append(PreferencePair(item.prompt, right[0], rule.text, item.id))
    return pairs


def _answered(labelled: Labelled, rule: Abstention) -> list[tuple[Sample, bool]]:
    pairs = zip(labelled.attempt.samples, labelled.correct, strict=True)
    return [(sample, ok) for sample, ok in pairs if not rule.abstains(sample)]


def preference_pairs(labelled: Sequence[Labelled]) -> list[PreferencePair]:
    """One (correct, incorrect) pair per prompt that has both."""
    pairs = []
    for lab in labelled:
        good = [s for s, ok in zip(lab.attempt.samples, lab.correct, strict=True) if ok]
        bad = [s for s, ok in zip(lab.attempt.samples, lab.correct, strict=True) if not ok]
        if good and bad:
            pairs.append(
                PreferencePair(
                    lab.attempt.item.prompt, good[0].text, bad[0].text, lab.attempt.item.id
                )
            )
    return pairs


def dedupe(examples: Sequence[SFTExample]) -> list[SFTExample]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for example in examples:
        key = (normalize(example.prompt), normalize(example.completion))
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


STRATEGIES: dict[str, Callable[[Sequence[Labelled], int], list[SFTExample]]] = {
    "correct_only": correct_only,
    "risk_weighted": risk_weighted,
    "self_judge": correct_only,  # labels come from the model as judge; then keep the correct
}
# Strategies that also read what an abstention says and when to teach it (`Abstention`,
# from the plan), and build their own preference pairs.
ABSTAINING: dict[str, Callable[[Sequence[Labelled], int, Abstention], list[SFTExample]]] = {
    "learn_abstention": learn_abstention,
}


def sample_accuracy(labelled: Sequence[Labelled]) -> float:
    """Share of all samples judged correct."""
    total = sum(len(lab.correct) for lab in labelled)
    return sum(sum(lab.correct) for lab in labelled) / max(total, 1)


def wasted_share(labelled: Sequence[Labelled]) -> float:
    """Share of prompts whose samples all got the same verdict (all right or all wrong):
    their samples teach the learner nothing a single one would not (DAPO drops them).

    >>> from tasks.base import Item
    >>> a = Attempt(Item("1", "q", ("a",), "1"), (), None)
    >>> wasted_share([Labelled(a, (True, True)), Labelled(a, (True, False))])
    0.5
    """
    same = sum(len(set(lab.correct)) <= 1 for lab in labelled)
    return same / max(len(labelled), 1)


@dataclass(frozen=True)
class Selected:
    """One cycle's training data, and how many prompts it came from."""

    examples: list[SFTExample]
    pairs: list[PreferencePair]
    prompts: int
    sample_accuracy: float
    wasted_share: float  # prompts whose samples all got the same verdict
    # per attempt (in the attempts' order), each sample's label: True = judged correct
    verdicts: tuple[tuple[bool, ...], ...] = ()


def select_data(
    task: Task,
    attempts: Sequence[Attempt],
    plan: dict[str, Any],
    policy: SelectPolicy,
    *,
    judge: Callable[[], Engine],
) -> Selected:
    """Label the samples (the task's verifier, or the model judging itself: `judge()`
    gives its engine), pick examples per the plan's strategy, dedupe, build pairs. An
    abstaining strategy reads the plan's `abstention_text` and `abstain_max_pass_rate`."""
    strategy, per_prompt = plan["strategy"], plan["max_per_prompt"]
    if strategy == "self_judge":
        labelled = label_with_self_judge(judge(), attempts)
    else:
        labelled = label_with_verifier(task, attempts)
    if strategy in ABSTAINING:
        rule = Abstention(
            plan["abstention_text"],
            plan["abstain_max_pass_rate"],
            plan.get("abstain_max_share", 1.0),  # absent from plans saved before it existed
        )
        examples = ABSTAINING[strategy](labelled, per_prompt, rule)
        pairs = abstention_pairs(labelled, rule)
    else:
        examples = STRATEGIES[strategy](labelled, per_prompt)
        pairs = preference_pairs(labelled)
    examples = dedupe(examples) if policy.dedupe else examples
    pairs = pairs if policy.pairs else []
    return Selected(
        examples,
        pairs,
        len(labelled),
        sample_accuracy(labelled),
        wasted_share(labelled),
        tuple(lab.correct for lab in labelled),
    )


def usable_count(method: str, sft: int, pairs: int, groups: int = 0) -> int:
    """Examples a training method can use: preference pairs for DPO, groups whose rewards
    differ for GRPO, SFT examples else.

    >>> usable_count("dpo", sft=10, pairs=3), usable_count("sft", sft=10, pairs=3)
    (3, 10)
    >>> usable_count("grpo", sft=10, pairs=3, groups=5)
    5
    """
    return {"dpo": pairs, "grpo": groups}.get(method, sft)


# -- planning: select's choices (agents.planning.StagePlanning) -----------------------------


class SelectPlan(Plan):
    """How to choose training examples from the labelled samples."""

    strategy: SelectStrategy = Field(
        description="correct_only, risk_weighted, self_judge or learn_abstention"
    )
    max_per_prompt: int = Field(default=1, description="distinct correct samples kept per prompt")


class SelectSections(Protocol):
    """The session policy's sections select's planning reads."""

    @property
    def select(self) -> SelectPolicy: ...
    @property
    def acquire(self) -> AcquirePolicy: ...
    @property
    def monitor(self) -> MonitorPolicy: ...
    @property
    def refine(self) -> RefinePolicy: ...


@dataclass(frozen=True)
class SelectFacts:
    """What select's planning knows besides the policy."""

    cycle: int
    history: Sequence[CycleMetrics]
    data: Mapping[str, Any] | None = None
    has_verifier: bool = True

    @property
    def probe_auroc(self) -> float | None:
        return self.history[-1].probe_auroc if self.history else None


def select_bounds(policy: SelectSections) -> dict[str, Bound]:
    """What a planner may ask for: shown to it, and enforced on its proposal."""
    k = policy.acquire.samples_per_prompt
    return {"max_per_prompt": Bound(1, k, "acquire.samples_per_prompt")}


def select_rules(policy: SelectSections) -> dict[str, Any]:
    rules = {"strategy": policy.select.strategy, "max_per_prompt": policy.select.max_per_prompt}
    return rules | abstention_settings(policy, policy.select.strategy)


def abstention_settings(policy: SelectSections, strategy: str) -> dict[str, Any]:
    """What an abstaining strategy reads besides the labels (none for the others): the
    policy's abstention text (shared with refine and evaluate), pass-rate threshold and
    the cap on the share of abstention examples."""
    if strategy not in ABSTAINING:
        return {}
    return {
        "abstention_text": policy.refine.abstention_text,
        "abstain_max_pass_rate": policy.select.abstain_max_pass_rate,
        "abstain_max_share": policy.select.abstain_max_share,
    }


class SelectPlanning:
    """The selection strategy and the samples kept per prompt."""

    stage: Stage = "select"
    schema = SelectPlan
    guide = (
        "Choose how to pick training examples from the labelled samples: correct_only "
        "(rejection sampling), risk_weighted (solved prompts the probe found risky), self_judge, "
        "or learn_abstention (teach abstaining on prompts the model gets wrong)."
    )

    def rules(self, policy: SelectSections, facts: SelectFacts) -> tuple[dict[str, Any], str]:
        return select_rules(policy), RULES_REASON

    def situation(
        self, policy: SelectSections, facts: SelectFacts, rules: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "cycle": facts.cycle,
            "history": history_rows(facts.history),
            "data": dict(facts.data or {}),
            "probe_auroc": facts.probe_auroc,
            "has_verifier": facts.has_verifier,
            "bounds": shown_bounds(select_bounds(policy)),
            "rules_choice": rules,
        }

    def check(
        self, plan: SelectPlan, policy: SelectSections, facts: SelectFacts, rules: Mapping[str, Any]
    ) -> Checked:
        notes: list[str] = []
        final: dict[str, Any] = {"strategy": plan.strategy}
        for name, bound in select_bounds(policy).items():
            final[name] = clamp(name, getattr(plan, name), bound, notes)
        rules_strategy, trust = policy.select.strategy, policy.monitor.min_probe_auroc_to_trust
        auroc = facts.probe_auroc
        if plan.strategy == "risk_weighted" and (auroc is None or auroc < trust):
            shown = "unknown" if auroc is None else f"{auroc:.2f}"
            notes.append(
                f"risk_weighted needs a trusted probe (AUROC {shown} < {trust}) -> {rules_strategy}"
            )
            final["strategy"] = rules_strategy
        if plan.strategy == "self_judge" and facts.has_verifier:
            notes.append(f"self_judge would replace the task's verifier labels -> {rules_strategy}")
            final["strategy"] = rules_strategy
        switches = plan.strategy in ABSTAINING and rules_strategy not in ABSTAINING
        if switches and policy.monitor.score == "accuracy":
            notes.append(
                f"{plan.strategy} teaches abstentions, which monitor.score 'accuracy' counts as "
                f"wrong answers -> {rules_strategy}"
            )
            final["strategy"] = rules_strategy
        return Checked(final | abstention_settings(policy, final["strategy"]), notes)


SELECT_PLANNING = SelectPlanning()
