"""Monitor: reads the evaluation history and the probe's risk signals and decides
loop | retrain | refit_probe | rollback | stop. Pure functions, no I/O.

`assess` turns the history and the session's counters into facts; `RULES` is an ordered
table of small rules over those facts, the first that fires decides. The first three
(target, budget, regression guard) are hard: a planner's proposal never overrides them.

A risk signal counts for as much as the probe's AUROC on the new model's fresh labels:
weight = (AUROC - 0.5) / 0.5, clamped to [0, 1]; below `min_probe_auroc_to_trust` the
evidence says the signal was discounted.

Versions are compared (gain, plateau, regression guard, best version) on the policy's
`score`: dev accuracy, or honesty = accuracy - hallucination_penalty x hallucination rate
(correct / n minus penalty x wrong / n: an abstention scores 0, a wrong answer -penalty).
Honesty rewards abstaining, so it comes with an accuracy floor (a share of the initial
model's dev accuracy); a version below the floor, or one that abstains on every question,
is never promoted.

An online-RL run (GRPO) also reports its health per step: a run that collapsed
(`agents.training_health.collapse`) makes its version one that is never promoted, rolled
back like a regression, with the reason in the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from agents.config import StageConfig
from agents.planning import Checked
from agents.records import Action, CycleMetrics, Decision, Evidence, Plan, PlannedChoice, Stage
from agents.training_health import HealthRules, StepHealth, collapse
from probes.metrics import auroc_drop_is_clear

HARD_RULES = frozenset({"target", "budget", "regression"})


class MonitorPolicy(StageConfig):
    """Monitor: the rules that decide loop | retrain | refit_probe | rollback | stop."""

    target_accuracy: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Stop once dev accuracy reaches this (null: no target).",
    )
    min_gain: float = Field(
        default=0.01,
        ge=0.0,
        description="Dev accuracy gain over the best version that counts as progress.",
    )
    patience: int = Field(
        default=1, ge=1, description="Cycles in a row without min_gain before the session stops."
    )
    max_cycles: int = Field(default=4, ge=1, description="Most improvement cycles.")
    max_wall_minutes: float = Field(
        default=12.0, gt=0.0, description="Wall-time budget of the whole session."
    )
    project_wall_budget: bool = Field(
        default=True,
        description="Also stop when another cycle as long as the last would overrun "
        "max_wall_minutes.",
    )
    regression_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="A version worse on dev than the best by more than this is rolled back, "
        "never promoted.",
    )
    max_retrains: int = Field(
        default=1, ge=0, description="Most retrains (same data, adjusted settings) per session."
    )
    retrain_min_examples: int = Field(
        default=16,
        ge=1,
        description="A cycle's data counts as good enough to retrain on with at least this "
        "many examples.",
    )
    drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Probe AUROC drop on fresh labels (vs its fit) that makes it stale.",
    )
    calibration_drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Probe calibration error (ECE) rise on fresh labels that makes it stale.",
    )
    max_probe_refits: int = Field(
        default=1,
        ge=0,
        description="Most probe refits per session (a greedy re-labelling and sweep; never "
        "chosen while probe.refit_every_cycle refits the probe on each cycle's samples).",
    )
    min_entropy: float = Field(
        default=0.05,
        ge=0.0,
        description="Online RL's health: a run whose last step's mean token entropy is under "
        "this has collapsed (near-deterministic), and its version is rolled back.",
    )
    max_length_growth: float = Field(
        default=3.0,
        gt=1.0,
        description="Online RL's health: a run whose mean completion length grew more than "
        "this many times its first step's has collapsed (answers blowing up).",
    )
    min_probe_auroc_to_trust: float = Field(
        default=0.6,
        ge=0.5,
        le=1.0,
        description="Below this AUROC on fresh labels the probe's risk signal is discounted "
        "as near chance.",
    )
    min_risk_drop: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="A fall in mean dev risk (weighted by the probe's AUROC) that keeps a "
        "session with flat accuracy going another cycle.",
    )
    score: Literal["accuracy", "honesty"] = Field(
        default="accuracy",
        description="What versions are compared on (gain, plateau, regression guard, best "
        "version): accuracy (correct / n), or honesty = accuracy - hallucination_penalty x "
        "hallucination rate (wrong / n), where abstaining scores 0 and a wrong answer "
        "-hallucination_penalty; honesty needs accuracy_floor.",
    )
    hallucination_penalty: float = Field(
        default=1.0,
        gt=0.0,
        description="honesty's price of a wrong answer, in right answers (1: one wrong "
        "answer undoes one right answer).",
    )
    target_hallucination_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Stop once a version's dev hallucination rate (wrong / n) is at or below "
        "this while it keeps accuracy_floor (null: no target).",
    )
    accuracy_floor: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of the initial model's dev accuracy a version must keep: below it "
        "the version is never promoted and no target counts as reached (0.85: at most 15% "
        "fewer right answers than v0; 0: no floor).",
    )

    @model_validator(mode="after")
    def _check(self) -> MonitorPolicy:
        if self.accuracy_floor == 0.0 and self.score == "honesty":
            raise ValueError(
                "monitor.score 'honesty' rewards abstaining: set monitor.accuracy_floor "
                "(e.g. 0.85) so that a version that abstains on most questions is never promoted"
            )
        if self.accuracy_floor == 0.0 and self.target_hallucination_rate is not None:
            raise ValueError(
                "monitor.target_hallucination_rate is reached by abstaining on everything: set "
                "monitor.accuracy_floor (e.g. 0.85) beside it"
            )
        return self


def version_score(metrics: CycleMetrics, policy: MonitorPolicy) -> float:
    """What versions are compared on: dev accuracy, or honesty (accuracy minus the
    hallucination penalty times the hallucination rate).

    >>> m = CycleMetrics(cycle=1, version="v1", accuracy=0.4, hallucination_rate=0.5)
    >>> honesty = MonitorPolicy(score="honesty", accuracy_floor=0.85)
    >>> version_score(m, MonitorPolicy()), round(version_score(m, honesty), 6)
    (0.4, -0.1)
    """
    if policy.score == "accuracy":
        return metrics.accuracy
    return metrics.accuracy - policy.hallucination_penalty * metrics.hallucination_rate


def score_text(metrics: CycleMetrics, policy: MonitorPolicy) -> str:
    """A version's score as the reasons print it.

    >>> m = CycleMetrics(cycle=1, version="v1", accuracy=0.4, hallucination_rate=0.5)
    >>> score_text(m, MonitorPolicy())
    'dev accuracy 40.0%'
    >>> score_text(m, MonitorPolicy(score="honesty", accuracy_floor=0.85))
    'dev honesty -10.0% (accuracy 40.0%, hallucination 50.0%)'
    """
    if policy.score == "accuracy":
        return f"dev accuracy {metrics.accuracy:.1%}"
    return (
        f"dev honesty {version_score(metrics, policy):+.1%} (accuracy {metrics.accuracy:.1%}, "
        f"hallucination {metrics.hallucination_rate:.1%})"
    )


def floor_accuracy(history: Sequence[CycleMetrics], policy: MonitorPolicy) -> float:
    """The least dev accuracy a version may keep: the floor's share of the initial model's.

    >>> m = CycleMetrics(cycle=0, version="v0", accuracy=0.4, hallucination_rate=0.6)
    >>> round(floor_accuracy([m], MonitorPolicy(accuracy_floor=0.85)), 6)
    0.34
    """
    return policy.accuracy_floor * history[0].accuracy


def unpromotable(candidate: CycleMetrics, floor: float, policy: MonitorPolicy) -> str | None:
    """Why a version must never be promoted whatever its score, else None: it abstained on
    every question, or it fell below the accuracy floor.

    >>> m = lambda acc, abstained: CycleMetrics(cycle=1, version="v1", accuracy=acc,
    ...     hallucination_rate=1 - acc - abstained, abstention_rate=abstained)
    >>> unpromotable(m(0.0, 1.0), 0.0, MonitorPolicy())
    'v1 abstained on every dev question'
    >>> print(unpromotable(m(0.3, 0.6), 0.34, MonitorPolicy(accuracy_floor=0.85)))
    v1 keeps dev accuracy 30.0%, below the floor 34.0% (0.85 x the initial model's)
    >>> unpromotable(m(0.35, 0.6), 0.34, MonitorPolicy(accuracy_floor=0.85)) is None
    True
    """
    if candidate.abstention_rate >= 1.0:
        return f"{candidate.version} abstained on every dev question"
    if candidate.accuracy < floor - 1e-9:
        return (
            f"{candidate.version} keeps dev accuracy {candidate.accuracy:.1%}, below the floor "
            f"{floor:.1%} ({policy.accuracy_floor:g} x the initial model's)"
        )
    return None


@dataclass(frozen=True)
class Assessment:
    """Facts the rules read; every one also lands in the Decision's evidence."""

    cycle: int
    candidate: CycleMetrics | None  # the version evaluated this cycle (None: nothing trained)
    best_version: str
    best_accuracy: float | None
    gain: float | None  # candidate score - best score (the policy's `score`)
    regressed: bool
    regression: str | None  # why the candidate is not promoted (None: it is not regressed)
    best_score: float
    best_hallucination_rate: float
    floor_accuracy: float  # the least dev accuracy a version may keep
    plateau_streak: int  # evaluations in a row (this one included) without min_gain
    data_ok: bool
    elapsed_minutes: float
    last_cycle_minutes: float | None
    finalize_minutes: float  # what scoring the test split at the end is expected to take
    retrains_so_far: int
    probe_refits_so_far: int
    probe_auroc: float | None  # fresh labels, latest version
    probe_baseline_auroc: float | None  # at fit time
    auroc_drop: float | None
    ece_rise: float | None
    risk_weight: float
    risk_signal: str
    risk_drop: float | None  # fall of mean dev risk vs the best version, weighted
    drift_clear: bool = False  # the AUROC fell by more than both measurements' noise
    probe_refit_each_cycle: bool = False

    def evidence(self, policy: MonitorPolicy) -> Evidence:
        c = self.candidate
        return {
            "cycle": float(self.cycle),
            "max_cycles": float(policy.max_cycles),
            "version": c.version if c else None,
            "accuracy": c.accuracy if c else None,
            "best_version": self.best_version,
            "best_accuracy": self.best_accuracy,
            "score": policy.score,
            "candidate_score": version_score(c, policy) if c else None,
            "best_score": self.best_score,
            "gain": self.gain,
            "min_gain": policy.min_gain,
            "plateau_streak": float(self.plateau_streak),
            "hallucination_rate": c.hallucination_rate if c else None,
            "abstention_rate": c.abstention_rate if c else None,
            "answered_precision": c.answered_precision if c else None,
            "accuracy_floor": self.floor_accuracy,
            "train_examples": float(c.train_examples) if c else None,
            "elapsed_minutes": round(self.elapsed_minutes, 2),
            "max_wall_minutes": policy.max_wall_minutes,
            "finalize_minutes": round(self.finalize_minutes, 2),
            "retrains_so_far": float(self.retrains_so_far),
            "probe_auroc": self.probe_auroc,
            "probe_baseline_auroc": self.probe_baseline_auroc,
            "auroc_drop": self.auroc_drop,
            "probe_ece": c.probe_ece if c else None,
            "ece_rise": self.ece_rise,
            "mean_risk": c.mean_risk if c else None,
            "predicted_accuracy": c.predicted_accuracy if c else None,
            "stale_probe_auroc": c.stale_probe_auroc if c else None,
            "risk_weight": self.risk_weight,
            "risk_drop": self.risk_drop,
            "risk_signal": self.risk_signal,
        }


def risk_weight(auroc: float | None) -> float:
    """How much a risk signal counts: 0 at chance (AUROC 0.5), 1 for a perfect probe.

    >>> risk_weight(0.55)
    0.1
    >>> risk_weight(None), risk_weight(0.3), risk_weight(1.0)
    (0.0, 0.0, 1.0)
    """
    if auroc is None:
        return 0.0
    return round(min(max((auroc - 0.5) / 0.5, 0.0), 1.0), 4)


def risk_signal_note(auroc: float | None, trust: float) -> str:
    """What the evidence says about the risk signal's worth (`trust`: the AUROC below
    which the probe counts as near chance).

    >>> risk_signal_note(0.55, trust=0.6)
    'probe near chance (AUROC 0.55): risk signal informs little'
    >>> risk_signal_note(0.8, trust=0.6)
    'probe AUROC 0.80 on fresh labels: risk signal weighted 0.60'
    """
    if auroc is None:
        return "probe AUROC on fresh labels unknown: risk signal not used"
    if auroc < trust:
        return f"probe near chance (AUROC {auroc:.2f}): risk signal informs little"
    return f"probe AUROC {auroc:.2f} on fresh labels: risk signal weighted {risk_weight(auroc):.2f}"


def forecast_note(metrics: CycleMetrics) -> str:
    """The probe's forecast of dev accuracy beside the measured one (empty: no probe).

    >>> m = CycleMetrics(cycle=1, version="v1", accuracy=0.45, hallucination_rate=0.5,
    ...                  predicted_accuracy=0.41)
    >>> forecast_note(m)
    '; probe forecast dev accuracy 41.0%, measured 45.0%'
    """
    if metrics.predicted_accuracy is None:
        return ""
    return (
        f"; probe forecast dev accuracy {metrics.predicted_accuracy:.1%}, "
        f"measured {metrics.accuracy:.1%}"
    )


def finalize_minutes(history: Sequence[CycleMetrics], n_test: int) -> float:
    """Expected minutes to score the test split at the end, for the initial and the final
    model: their dev evaluations' times, scaled by test size over dev size (0 when no
    evaluation was timed).

    >>> m = lambda s: CycleMetrics(cycle=0, version="v", accuracy=0, hallucination_rate=0,
    ...                            n_dev=100, eval_seconds=s)
    >>> finalize_minutes([m(60.0), m(40.0), m(30.0)], n_test=50)
    0.75
    """
    first, latest = history[0], history[-1]
    if first.eval_seconds is None or latest.eval_seconds is None or not latest.n_dev:
        return 0.0
    return (first.eval_seconds + latest.eval_seconds) / 60 * n_test / latest.n_dev


def gains(
    history: Sequence[CycleMetrics],
    score: Callable[[CycleMetrics], float] = lambda m: m.accuracy,
    eligible: Callable[[CycleMetrics], bool] = lambda m: True,
) -> list[float]:
    """Each evaluation's gain in `score` (default: accuracy) over the best before it (the
    first has none); a later version that is not `eligible` (never promotable) is never
    the best.

    >>> m = lambda a: CycleMetrics(cycle=0, version="v", accuracy=a, hallucination_rate=0)
    >>> [round(g, 2) for g in gains([m(0.1), m(0.3), m(0.2), m(0.35)])]
    [0.2, -0.1, 0.05]
    >>> [round(g, 2) for g in gains([m(0.1), m(0.3), m(0.2)], eligible=lambda v: v.accuracy < 0.3)]
    [0.2, 0.1]
    """
    out: list[float] = []
    best: float | None = None
    for metrics in history:
        value = score(metrics)
        if best is not None:
            out.append(value - best)
        if best is None or eligible(metrics):
            best = value if best is None else max(best, value)
    return out


def policy_gains(history: Sequence[CycleMetrics], policy: MonitorPolicy) -> list[float]:
    """`gains` in the policy's score, versions that may never be promoted left out of the
    best (see `unpromotable`)."""
    floor = floor_accuracy(history, policy) if history else 0.0
    return gains(
        history,
        score=lambda m: version_score(m, policy),
        eligible=lambda m: unpromotable(m, floor, policy) is None,
    )


@dataclass(frozen=True)
class MonitorInputs:
    """What the monitor reads besides the history: the session's counters and clocks.
    `trained=False`: this cycle made no new version (too little data), so the last entry
    is not a candidate and the cycle counts as one without gain. `finalize_minutes`: the
    time the test split will take at the end, held back from the wall budget so that the
    whole session, not just its cycles, fits in it."""

    best_version: str
    elapsed_minutes: float
    retrains_so_far: int = 0
    probe_baseline_auroc: float | None = None
    probe_baseline_ece: float | None = None
    probe_refits_so_far: int = 0
    last_cycle_minutes: float | None = None
    finalize_minutes: float = 0.0
    trained: bool = True
    cycle: int | None = None
    # the greedy probe's held-out rows at fit: (wrong, right) answers, for the noise of its AUROC
    probe_baseline_counts: tuple[int, int] | None = None
    probe_refit_each_cycle: bool = False  # the per-cycle refit keeps the probe fresh
    train_steps: tuple[StepHealth, ...] = ()  # the candidate's training run, per step (GRPO)


def candidate_gain(
    history: Sequence[CycleMetrics], policy: MonitorPolicy, best_version: str
) -> float:
    """The latest evaluation's gain in the policy's score over the best version before it
    (`best_version`'s entry, else the best-scoring one).

    >>> m = lambda v, a: CycleMetrics(cycle=0, version=v, accuracy=a, hallucination_rate=0)
    >>> round(candidate_gain([m("v0", 0.2), m("v1", 0.5), m("v2", 0.4)], MonitorPolicy(), "v0"), 6)
    0.2
    """
    *earlier, candidate = history
    return version_score(candidate, policy) - version_score(
        _best_before(earlier, policy, best_version), policy
    )


def _best_before(
    earlier: Sequence[CycleMetrics], policy: MonitorPolicy, best_version: str
) -> CycleMetrics:
    return _entry(earlier, best_version) or max(earlier, key=lambda m: version_score(m, policy))


def assess(
    history: Sequence[CycleMetrics], policy: MonitorPolicy, inputs: MonitorInputs
) -> Assessment:
    """Facts from the history and the session's counters and clocks."""
    if not history:
        raise ValueError("the monitor needs at least the initial model's evaluation")
    candidate = history[-1] if inputs.trained and len(history) > 1 else None
    earlier = history[:-1] if candidate else history
    score = lambda m: version_score(m, policy)  # noqa: E731
    best = _best_before(earlier, policy, inputs.best_version)
    gain = candidate_gain(history, policy, inputs.best_version) if candidate else None
    floor = floor_accuracy(history, policy)
    streak = _trailing_below(policy_gains(history, policy), policy.min_gain) + (
        0 if candidate else 1
    )
    latest = candidate or history[-1]
    weight = risk_weight(latest.probe_auroc)
    collapsed = _collapse(candidate, best, inputs.train_steps, policy)
    regression = collapsed or _regression(candidate, best, gain, floor, policy)
    baseline_auroc = inputs.probe_baseline_auroc
    auroc_drop = _diff(baseline_auroc, latest.probe_auroc) if candidate else None
    return Assessment(
        cycle=inputs.cycle if inputs.cycle is not None else latest.cycle,
        candidate=candidate,
        best_version=best.version,
        best_accuracy=best.accuracy,
        gain=gain,
        regressed=regression is not None,
        regression=regression,
        best_score=score(best),
        best_hallucination_rate=best.hallucination_rate,
        floor_accuracy=floor,
        plateau_streak=streak,
        data_ok=candidate is not None and candidate.train_examples >= policy.retrain_min_examples,
        elapsed_minutes=inputs.elapsed_minutes,
        last_cycle_minutes=inputs.last_cycle_minutes,
        finalize_minutes=inputs.finalize_minutes,
        retrains_so_far=inputs.retrains_so_far,
        probe_refits_so_far=inputs.probe_refits_so_far,
        probe_auroc=latest.probe_auroc,
        probe_baseline_auroc=baseline_auroc,
        auroc_drop=auroc_drop,
        ece_rise=_diff(latest.probe_ece, inputs.probe_baseline_ece) if candidate else None,
        risk_weight=weight,
        risk_signal=risk_signal_note(latest.probe_auroc, policy.min_probe_auroc_to_trust)
        + forecast_note(latest),
        risk_drop=_weighted_drop(best, candidate, weight),
        drift_clear=auroc_drop is not None and _drift_is_clear(candidate, inputs),
        probe_refit_each_cycle=inputs.probe_refit_each_cycle,
    )


def _collapse(
    candidate: CycleMetrics | None,
    best: CycleMetrics,
    steps: Sequence[StepHealth],
    policy: MonitorPolicy,
) -> str | None:
    """Why the candidate's training run collapsed (never promoted: rolled back), if it did."""
    if candidate is None or not steps:
        return None
    rules = HealthRules(min_entropy=policy.min_entropy, max_length_growth=policy.max_length_growth)
    reason = collapse(steps, best.accuracy, candidate.accuracy, rules)
    return None if reason is None else f"{candidate.version}'s training collapsed: {reason}"


def _drift_is_clear(candidate: CycleMetrics | None, inputs: MonitorInputs) -> bool:
    """Whether the probe's AUROC on the candidate's fresh dev labels fell below its fit-time
    AUROC by more than the noise of both (each measured on its own rows, `auroc_drop_is_clear`).

    >>> m = CycleMetrics(cycle=1, version="v1", accuracy=0.5, hallucination_rate=0.5,
    ...                  probe_auroc=0.89, n_dev=80)
    >>> _drift_is_clear(m, MonitorInputs("v0", 1.0, probe_baseline_auroc=1.0,
    ...                                  probe_baseline_counts=(6, 6)))  # 12 rows at fit
    False
    >>> _drift_is_clear(m.model_copy(update={"probe_auroc": 0.6, "n_dev": 400}),
    ...     MonitorInputs("v0", 1.0, probe_baseline_auroc=0.85, probe_baseline_counts=(200, 200)))
    True
    """
    counts, before = inputs.probe_baseline_counts, inputs.probe_baseline_auroc
    if candidate is None or counts is None or before is None or candidate.probe_auroc is None:
        return False
    right = round(candidate.accuracy * candidate.n_dev)
    after = (candidate.probe_auroc, candidate.n_dev - right, right)
    return auroc_drop_is_clear((before, *counts), after)


def _regression(
    candidate: CycleMetrics | None,
    best: CycleMetrics,
    gain: float | None,
    floor: float,
    policy: MonitorPolicy,
) -> str | None:
    """Why the candidate may not be promoted: it may never be (`unpromotable`), or it
    scores worse than the best by more than the tolerance."""
    if candidate is None or gain is None:
        return None
    never = unpromotable(candidate, floor, policy)
    if never is not None:
        return never
    if gain >= -policy.regression_tolerance:
        return None
    return (
        f"{candidate.version} regressed: {score_text(candidate, policy)} vs "
        f"{score_text(best, policy)} for {best.version} ({gain:+.1%}, beyond the "
        f"{policy.regression_tolerance:.1%} tolerance)"
    )


def _entry(history: Sequence[CycleMetrics], version: str) -> CycleMetrics | None:
    return next((m for m in reversed(history) if m.version == version), None)


def _trailing_below(values: Sequence[float], floor: float) -> int:
    count = 0
    for value in reversed(values):
        if value >= floor:
            break
        count += 1
    return count


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def _weighted_drop(
    best: CycleMetrics, candidate: CycleMetrics | None, weight: float
) -> float | None:
    if candidate is None or best.mean_risk is None or candidate.mean_risk is None:
        return None
    return round((best.mean_risk - candidate.mean_risk) * weight, 4)


# -- the rules, in order ------------------------------------------------------------------

Rule = Callable[[Assessment, "MonitorPolicy"], "tuple[Action, str] | None"]


def target_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if p.target_accuracy is not None:
        reached = max(a.best_accuracy or 0.0, a.candidate.accuracy if a.candidate else 0.0)
        if reached >= p.target_accuracy:
            return "stop", f"target reached: dev accuracy {reached:.1%} >= {p.target_accuracy:.1%}"
    if p.target_hallucination_rate is not None:
        return _hallucination_target(a, p, p.target_hallucination_rate)
    return None


def _hallucination_target(
    a: Assessment, p: MonitorPolicy, target: float
) -> tuple[Action, str] | None:
    """Stop when the best version, or a candidate that may be promoted, hallucinates at
    most `target` while it keeps the accuracy floor."""
    versions = [(a.best_version, a.best_hallucination_rate, a.best_accuracy or 0.0)]
    if a.candidate is not None and not a.regressed:
        c = a.candidate
        versions.append((c.version, c.hallucination_rate, c.accuracy))
    for version, rate, accuracy in versions:
        if rate <= target and accuracy >= a.floor_accuracy - 1e-9:
            return "stop", (
                f"target reached: {version}'s dev hallucination rate {rate:.1%} <= "
                f"{target:.1%} with accuracy {accuracy:.1%} (floor {a.floor_accuracy:.1%})"
            )
    return None


def budget_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    reason = None
    if a.cycle >= p.max_cycles:
        reason = f"cycle budget spent ({a.cycle} of {p.max_cycles} cycles)"
    elif a.elapsed_minutes + a.finalize_minutes >= p.max_wall_minutes:
        reason = (
            f"wall budget spent ({a.elapsed_minutes:.1f} min + ~{a.finalize_minutes:.1f} min "
            f"for the test split >= {p.max_wall_minutes:g} min)"
        )
    elif p.project_wall_budget and a.last_cycle_minutes is not None:
        projected = a.elapsed_minutes + a.last_cycle_minutes + a.finalize_minutes
        if projected > p.max_wall_minutes:
            reason = (
                f"another cycle would overrun the wall budget ({a.elapsed_minutes:.1f} min + "
                f"~{a.last_cycle_minutes:.1f} min/cycle + ~{a.finalize_minutes:.1f} min for "
                f"the test split > {p.max_wall_minutes:g} min)"
            )
    if reason is None:
        return None
    if a.regressed and a.candidate:
        reason += f"; {a.candidate.version} regressed and is not promoted"
    return "stop", reason


def regression_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if a.regression is None or a.candidate is None:
        return None
    return "rollback", f"{a.regression}: restoring {a.best_version}"


def retrain_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if a.candidate is None or a.gain is None or a.gain >= p.min_gain:
        return None
    if not a.data_ok or a.retrains_so_far >= p.max_retrains:
        return None
    return "retrain", (
        f"the update did not help ({a.gain:+.1%} < {p.min_gain:.1%}) on good data "
        f"({a.candidate.train_examples} examples): retraining from {a.best_version} with "
        f"adjusted settings (retrain {a.retrains_so_far + 1} of {p.max_retrains})"
    )


def risk_progress_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if a.plateau_streak < p.patience or a.risk_drop is None or a.probe_auroc is None:
        return None
    if a.probe_auroc < p.min_probe_auroc_to_trust or a.risk_drop < p.min_risk_drop:
        return None
    return "loop", (
        f"accuracy flat ({a.gain or 0:+.1%}) but the probe's mean dev risk fell "
        f"{a.risk_drop:.2f} (weighted by AUROC {a.probe_auroc:.2f}): one more cycle"
    )


def plateau_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if a.plateau_streak < p.patience:
        return None
    if a.candidate is None:
        return (
            "stop",
            f"plateau: no usable training data this cycle "
            f"({a.plateau_streak} cycle(s) without gain)",
        )
    return "stop", (
        f"plateau: no gain of {p.min_gain:.1%} for {a.plateau_streak} evaluation(s) "
        f"(last {a.gain or 0:+.1%}); best is {a.best_version}"
    )


def probe_drift_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    """A greedy refit when the probe is stale beyond noise; never while the per-cycle
    refit keeps it fresh (its minutes go to another cycle)."""
    if a.candidate is None or a.probe_refits_so_far >= p.max_probe_refits:
        return None
    if a.probe_refit_each_cycle:
        return None
    version = a.candidate.version
    if a.auroc_drop is not None and a.auroc_drop > p.drift_threshold and a.drift_clear:
        return "refit_probe", (
            f"probe stale on {version}: AUROC {a.probe_auroc:.2f} on fresh labels vs "
            f"{a.probe_baseline_auroc:.2f} at fit (drop {a.auroc_drop:.2f} > {p.drift_threshold:g}, "
            "beyond the noise of both measurements)"
        )
    if a.ece_rise is not None and a.ece_rise > p.calibration_drift_threshold:
        return "refit_probe", (
            f"probe miscalibrated on {version}: ECE rose {a.ece_rise:.2f} "
            f"(> {p.calibration_drift_threshold:g})"
        )
    return None


def loop_rule(a: Assessment, p: MonitorPolicy) -> tuple[Action, str] | None:
    if a.candidate is None:
        return "loop", "no new version this cycle: next cycle with fresh data"
    return "loop", f"{a.candidate.version} gained {a.gain or 0:+.1%} on dev: next cycle"


RULES: tuple[tuple[str, Rule], ...] = (
    ("target", target_rule),
    ("budget", budget_rule),
    ("regression", regression_rule),
    ("retrain", retrain_rule),
    ("risk_progress", risk_progress_rule),
    ("plateau", plateau_rule),
    ("probe_drift", probe_drift_rule),
    ("loop", loop_rule),
)


def apply_rules(a: Assessment, policy: MonitorPolicy) -> tuple[str, Decision]:
    """The first rule that fires, and its Decision."""
    for name, rule in RULES:
        fired = rule(a, policy)
        if fired is not None:
            action, reason = fired
            return name, make_decision(a, policy, action, reason)
    raise AssertionError("loop_rule always fires")


def make_decision(
    a: Assessment, policy: MonitorPolicy, action: Action, reason: str, **extra: float | str | None
) -> Decision:
    promote = not a.regressed and action not in ("retrain", "rollback")
    return Decision(
        cycle=a.cycle,
        action=action,
        reason=reason,
        evidence={**a.evidence(policy), **extra},
        promote=promote,
    )


def admissible_actions(a: Assessment, policy: MonitorPolicy) -> set[Action]:
    """What a planner may choose when no hard rule has fired: stopping early is always
    safe; the rest only when the facts and the budgets allow it."""
    allowed: set[Action] = {"stop", "loop"}
    if a.candidate is not None:
        allowed.add("rollback")
        if a.data_ok and a.retrains_so_far < policy.max_retrains:
            allowed.add("retrain")
        refits_left = a.probe_refits_so_far < policy.max_probe_refits
        if a.probe_baseline_auroc is not None and refits_left and not a.probe_refit_each_cycle:
            allowed.add("refit_probe")
    return allowed


def decide(
    history: Sequence[CycleMetrics], policy: MonitorPolicy, inputs: MonitorInputs
) -> Decision:
    """The rules' Decision for the latest evaluation."""
    return apply_rules(assess(history, policy, inputs), policy)[1]


# -- planning: the monitor's choice (agents.planning.StagePlanning) -------------------------


class DecisionPlan(Plan):
    """The monitor's next action."""

    action: Action = Field(description="loop, retrain, refit_probe, rollback or stop")


class MonitorSections(Protocol):
    """The session policy's sections the monitor's planning reads."""

    @property
    def monitor(self) -> MonitorPolicy: ...


class MonitorPlanning:
    """The next action. A planner picks only among the actions the facts admit, and only
    when no hard rule fired: the rules and the regression guard have the last word."""

    stage: Stage = "monitor"
    schema = DecisionPlan
    guide = (
        "Choose the session's next action from the allowed ones: loop (new cycle), retrain "
        "(same data, adjusted settings), refit_probe, rollback (restore the best version) or stop."
    )

    def rules(self, policy: MonitorSections, facts: Assessment) -> tuple[dict[str, Any], str]:
        decision = apply_rules(facts, policy.monitor)[1]
        return _choice(decision), decision.reason

    def situation(
        self, policy: MonitorSections, facts: Assessment, rules: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "evidence": facts.evidence(policy.monitor),
            "allowed_actions": sorted(admissible_actions(facts, policy.monitor)),
            "rules_choice": rules["action"],
        }

    def check(
        self,
        plan: DecisionPlan,
        policy: MonitorSections,
        facts: Assessment,
        rules: Mapping[str, Any],
    ) -> Checked:
        rule, rules_decision = apply_rules(facts, policy.monitor)
        if plan.action == rules_decision.action:
            return Checked(dict(rules), reason=plan.reason or rules_decision.reason)
        if rule in HARD_RULES or plan.action not in admissible_actions(facts, policy.monitor):
            why = (
                f"the {rule} rule has the last word"
                if rule in HARD_RULES
                else f"{plan.action} is not allowed now"
            )
            note = f"planner proposed {plan.action}: {why}"
            reason = f"{rules_decision.reason} ({note})"
            return Checked({**rules, "reason": reason}, [note], reason)
        reason = f"planner: {plan.reason or plan.action} (rules would {rules_decision.action}: {rules_decision.reason})"
        return Checked(
            _choice(make_decision(facts, policy.monitor, plan.action, reason)), [], reason
        )


def planned_decision(a: Assessment, policy: MonitorPolicy, choice: PlannedChoice) -> Decision:
    """The Decision a planned monitor choice stands for: the rules' own where it kept their
    action (with the recorded reason and source), else the planner's admissible action,
    the rules' one in its evidence."""
    rules_decision = apply_rules(a, policy)[1]
    if choice.source == "rules":
        return rules_decision
    action, reason = choice.final["action"], choice.final["reason"]
    decision = (
        rules_decision
        if action == rules_decision.action
        else make_decision(a, policy, action, reason, rules_action=rules_decision.action)
    )
    return decision.model_copy(update={"source": choice.source, "reason": reason})


def _choice(decision: Decision) -> dict[str, Any]:
    return {"action": decision.action, "reason": decision.reason, "promote": decision.promote}


MONITOR_PLANNING = MonitorPlanning()
