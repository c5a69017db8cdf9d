"""Evaluate: greedy answers on held-out items, checked by the task's verifier; an answer
that opens with the policy's abstention text or a refusal phrase (and is not correct) is an
abstention, neither right nor a hallucination."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import Field

from agents.config import StageConfig
from agents.refine import Refined, RefinePolicy, Strategy, is_abstention, refine_answers
from engines.base import Engine, Generation, ProgressFn, RiskFn, SamplingParams
from probes.calibration import Thresholds
from tasks.base import Item, Task


class EvaluatePolicy(StageConfig):
    """Evaluate: held-out dev each cycle (test once at the end), greedy and refined."""

    dev_limit: int | None = Field(
        default=100, ge=1, description="Dev items scored each cycle (null: the whole split)."
    )
    test_limit: int | None = Field(
        default=None,
        ge=1,
        description="Test items scored at the end for the initial and final model (null: all).",
    )
    max_new_tokens: int = Field(default=96, ge=1, description="Token budget per dev/test answer.")
    refine: Strategy = Field(
        default="none",
        description="Inference refinement applied when evaluating (see the refine section).",
    )


@dataclass(frozen=True)
class ItemResult:
    id: str
    prompt: str
    answers: tuple[str, ...]
    output: str
    correct: bool
    finish_reason: str
    abstained: bool = False
    risk: float | None = None
    mean_logprob: float | None = None
    mean_entropy: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class EvalSummary:
    n: int
    accuracy: float  # correct / n (an abstention counts as not correct)
    hallucination_rate: float  # answered and wrong / n
    abstention_rate: float
    truncated: int  # answers cut off at max_new_tokens
    answered_precision: float | None = None  # correct / answered (None: nothing answered)

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> EvalSummary:
        """
        >>> r = lambda ok, abstained: ItemResult("i", "q", ("a",), "x", ok, "stop", abstained)
        >>> s = EvalSummary.of([r(True, False), r(False, False), r(False, True), r(False, True)])
        >>> s.accuracy, s.hallucination_rate, s.abstention_rate, s.answered_precision
        (0.25, 0.25, 0.5, 0.5)
        """
        n = max(len(results), 1)
        answered = sum(not r.abstained for r in results)
        correct = sum(r.correct for r in results)
        return cls(
            n=len(results),
            accuracy=correct / n,
            hallucination_rate=sum(not r.correct and not r.abstained for r in results) / n,
            abstention_rate=sum(r.abstained for r in results) / n,
            truncated=sum(r.finish_reason == "length" for r in results),
            answered_precision=correct / answered if answered else None,
        )


@dataclass(frozen=True)
class Proportion:
    """count / n with its 95% Wilson interval (None when n is 0)."""

    count: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, count: int, n: int) -> Proportion:
        """
        >>> p = Proportion.of(7, 20)
        >>> p.value, round(p.low, 3), round(p.high, 3)
        (0.35, 0.181, 0.567)
        >>> Proportion.of(0, 0).value is None
        True
        """
        if n == 0:
            return cls(count, n, None, None, None)
        from scipy.stats import binomtest

        interval = binomtest(count, n).proportion_ci(confidence_level=0.95, method="wilson")
        return cls(count, n, count / n, float(interval.low), float(interval.high))

    def text(self) -> str:
        """
        >>> Proportion.of(7, 20).text()
        '35.0% [18.1, 56.7] (7/20)'
        """
        if self.value is None:
            return f"- (0/{self.n})"
        return (
            f"{self.value:.1%} [{self.low * 100:.1f}, {self.high * 100:.1f}] "  # type: ignore[operator]
            f"({self.count}/{self.n})"
        )


def gated_rates(results: Sequence[ItemResult]) -> dict[str, Proportion]:
    """What a gated system is judged on, each with its interval: accuracy (correct / all),
    hallucination rate (answered and wrong / all), abstention rate, coverage (answered /
    all) and answered precision (correct / answered).

    >>> r = lambda ok, abstained: ItemResult("i", "q", ("a",), "x", ok, "stop", abstained)
    >>> rates = gated_rates([r(True, False), r(False, False), r(False, True), r(False, True)])
    >>> {name: p.value for name, p in rates.items()}
    {'accuracy': 0.25, 'hallucination_rate': 0.25, 'abstention_rate': 0.5, 'coverage': 0.5, 'answered_precision': 0.5}
    """
    n, correct = len(results), sum(r.correct for r in results)
    abstained = sum(r.abstained for r in results)
    answered = n - abstained
    return {
        "accuracy": Proportion.of(correct, n),
        "hallucination_rate": Proportion.of(answered - correct, n),
        "abstention_rate": Proportion.of(abstained, n),
        "coverage": Proportion.of(answered, n),
        "answered_precision": Proportion.of(correct, answered),
    }


DEFAULT_ABSTENTIONS = RefinePolicy().abstentions


def score_generation(
    task: Task,
    item: Item,
    generation: Generation,
    abstentions: Sequence[str] = DEFAULT_ABSTENTIONS,
) -> ItemResult:
    """The greedy answer, verified; an incorrect one that opens with one of `abstentions`
    (the policy's abstention text and refusal phrases) is an abstention."""
    sample = generation.samples[0]
    correct = task.verify(sample.text, item)
    return ItemResult(
        id=item.id,
        prompt=item.prompt,
        answers=item.answers,
        output=sample.text,
        correct=correct,
        finish_reason=sample.finish_reason,
        abstained=not correct and is_abstention(sample.text, abstentions),
        risk=generation.risk,
        mean_logprob=sample.mean_logprob,
        mean_entropy=sample.mean_entropy,
    )


def greedy_eval(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int | None = None,
    on_progress: ProgressFn | None = None,
    abstentions: Sequence[str] = DEFAULT_ABSTENTIONS,
) -> list[ItemResult]:
    """Greedy answers with room to finish (the task's token budget by default)."""
    generations = engine.generate(
        [item.prompt for item in items],
        SamplingParams(max_new_tokens=max_new_tokens or task.max_new_tokens),
        on_progress=on_progress,
    )
    return [
        score_generation(task, item, g, abstentions)
        for item, g in zip(items, generations, strict=True)
    ]


@dataclass(frozen=True)
class Measurement:
    """One model version on held-out items: answers, summary and the probe on fresh labels."""

    results: list[ItemResult]
    summary: EvalSummary
    mean_risk: float | None
    probe_auroc: float | None  # the probe's AUROC on this version's own (fresh) labels
    probe_ece: float | None  # calibration error of the probe's risk on those labels
    stale_auroc: float | None = None  # an older probe's, on the same labels and states
    stale_ece: float | None = None
    logprob_auroc: float | None = None  # baselines read after generation, same labels
    entropy_auroc: float | None = None
    probe_aurc: float | None = None  # area under the probe's risk-coverage curve, same labels


def measure(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int,
    strategy: Strategy = "none",
    refine: RefinePolicy | None = None,
    thresholds: Thresholds | None = None,
    fallback: Callable[[str], str] | None = None,
    seed: int = 0,
    stale: RiskFn | None = None,
    on_progress: ProgressFn | None = None,
    risk_fn: RiskFn | None = None,
) -> Measurement:
    """Greedy answers (risk from their own prefill, by the probe `risk_fn`), refined by
    `strategy` (with the refine policy's k and temperature, and `thresholds` for the risk
    routes), then scored; the refine policy's abstention text and refusal phrases mark
    abstentions. `stale` (an older probe) is scored on the same prefill states and labels."""

    refine = refine or RefinePolicy()
    said = refine.abstentions
    prompts = [item.prompt for item in items]
    greedy = engine.generate(
        prompts,
        SamplingParams(max_new_tokens=max_new_tokens),
        on_progress=on_progress,
        risk_fn=risk_fn,
    )
    plain = [score_generation(task, item, g, said) for item, g in zip(items, greedy, strict=True)]
    results = plain
    if strategy != "none":
        refined = refine_answers(
            engine,
            prompts,
            strategy=strategy,
            thresholds=thresholds or Thresholds(),
            k=refine.k,
            temperature=refine.temperature,
            max_new_tokens=max_new_tokens,
            key=task.answer_key,
            seed=seed,
            fallback=fallback,
            greedy=greedy,
            abstention=refine.abstention_text,
        )
        results = [
            refined_result(task, item, r, said) for item, r in zip(items, refined, strict=True)
        ]
    measurement = Measurement(
        results,
        EvalSummary.of(results),
        *probe_on_fresh_labels(plain),
        logprob_auroc=baseline_auroc(plain, lambda r: -(r.mean_logprob or 0.0)),
        entropy_auroc=baseline_auroc(plain, lambda r: r.mean_entropy or 0.0),
        probe_aurc=probe_aurc(plain),
    )
    if stale is None:
        return measurement
    scored = [
        replace(r, risk=stale(g.states) if g.states is not None else None)
        for r, g in zip(plain, greedy, strict=True)
    ]
    _, stale_auroc, stale_ece = probe_on_fresh_labels(scored)
    return replace(measurement, stale_auroc=stale_auroc, stale_ece=stale_ece)


def final_test_items(task: Task, seed: int, config: EvaluatePolicy) -> list[Item]:
    """The test items the session scores once, at its end, for the initial and the final
    model (the monitor budgets time for them): the task's test split, cut at
    `config.test_limit`."""
    return task.split("test", seed=seed)[: config.test_limit]


def score_on_test(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    config: EvaluatePolicy,
    *,
    refine: RefinePolicy,
    seed: int,
    on_progress: ProgressFn | None = None,
    risk_fn: RiskFn | None = None,
) -> dict[str, Any]:
    """One version on the test `items`: greedy answers within `config.max_new_tokens`
    (risk by the probe `risk_fn`), abstentions as `refine` words them, scored
    (`held_out_scores`)."""
    measured = measure(
        engine,
        task,
        items,
        max_new_tokens=config.max_new_tokens,
        refine=refine,
        seed=seed,
        on_progress=on_progress,
        risk_fn=risk_fn,
    )
    return held_out_scores(measured)


def held_out_scores(measured: Measurement) -> dict[str, Any]:
    """A version's test-split numbers: the four rates (accuracy and hallucination rate
    over all questions, abstention rate, precision of the answered ones) and the probe's
    AURC on the version's fresh labels.

    >>> s = EvalSummary(n=4, accuracy=0.5, hallucination_rate=0.25, abstention_rate=0.25,
    ...                 truncated=0, answered_precision=2 / 3)
    >>> sorted(held_out_scores(Measurement([], s, None, None, None)))[:3]
    ['n_test', 'test_abstention_rate', 'test_accuracy']
    """
    s = measured.summary
    return {
        "test_accuracy": s.accuracy,
        "test_hallucination_rate": s.hallucination_rate,
        "test_abstention_rate": s.abstention_rate,
        "test_answered_precision": s.answered_precision,
        "test_probe_aurc": measured.probe_aurc,
        "test_truncated": s.truncated,
        "n_test": s.n,
    }


def refined_result(
    task: Task, item: Item, refined: Refined, abstentions: Sequence[str]
) -> ItemResult:
    """A refined answer, verified: abstained when its route abstained, or when it is not
    correct and opens with one of `abstentions`."""
    correct = not refined.abstained and task.verify(refined.text, item)
    return ItemResult(
        id=item.id,
        prompt=item.prompt,
        answers=item.answers,
        output=refined.text,
        correct=correct,
        finish_reason=refined.finish_reason,
        abstained=refined.abstained or (not correct and is_abstention(refined.text, abstentions)),
        risk=refined.risk,
    )


def baseline_auroc(
    results: Sequence[ItemResult], risk: Callable[[ItemResult], float]
) -> float | None:
    """AUROC of a post-generation signal (low mean logprob, high entropy) on the answers
    that finished: what the probe must beat before any token exists."""
    from probes.metrics import auroc

    finished = [r for r in results if r.finish_reason == "stop"]
    labels = [int(not r.correct) for r in finished]
    if len(set(labels)) < 2:
        return None
    return auroc(labels, [risk(r) for r in finished])


def probe_on_fresh_labels(
    results: Sequence[ItemResult],
) -> tuple[float | None, float | None, float | None]:
    """(mean risk, AUROC, ECE) of the attached probe against the greedy answers' labels;
    answers cut off at the token budget are left out (their label is not a hallucination)."""
    from probes.metrics import auroc_and_ece

    scored = [r for r in results if r.risk is not None]
    if not scored:
        return None, None, None
    mean_risk = sum(r.risk or 0.0 for r in scored) / len(scored)
    finished = [r for r in scored if r.finish_reason == "stop"]
    labels = [int(not r.correct) for r in finished]
    risks = [r.risk or 0.0 for r in finished]
    return mean_risk, *auroc_and_ece(labels, risks)


def probe_aurc(results: Sequence[ItemResult]) -> float | None:
    """Area under the risk-coverage curve of the attached probe on the greedy answers'
    labels (1 = not correct: wrong or abstained), answers cut off at the budget left out, as
    for the AUROC: the mean error rate among the k lowest-risk answers, k = 1..n (lower is
    better; a probe that ranks every error last scores the least the labels allow).

    >>> r = lambda ok, risk: ItemResult("i", "q", ("a",), "x", ok, "stop", risk=risk)
    >>> probe_aurc([r(True, 0.1), r(False, 0.9)]), probe_aurc([r(True, None)])
    (0.25, None)
    """
    from probes.metrics import aurc

    finished = [r for r in results if r.risk is not None and r.finish_reason == "stop"]
    if not finished:
        return None
    return aurc([int(not r.correct) for r in finished], [r.risk or 0.0 for r in finished])
