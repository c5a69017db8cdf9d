"""Monitor: reads the evaluation history and the probe's risk signals and decides
loop | retrain | refit_probe | rollback | stop. Pure functions, no I/O.

`assess` turns the history and the session's counters into facts; `RULES` is an ordered
table of small rules over those facts, the first that fires decides. The first three
(target, budget, regression guard) are hard: a planner's proposal never overrides them.

A risk signal counts for as much as the probe's AUROC on the new model's fresh labels:
weight = (AUROC - 0.5) / 0.5, clamped to [0, 1]; below `min_probe_auroc_to_trust` the
evidence says the signal was discounted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from agents.config import StageConfig
from agents.records import Action, CycleMetrics, Decision, Evidence

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
    max_probe_refits: int = Field(default=1, ge=0, description="Most probe refits per session.")
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


@dataclass(frozen=True)
class Assessment:
    """Facts the rules read; every one also lands in the Decision's evidence."""

    cycle: int
    candidate: CycleMetrics | None  # the version evaluated this cycle (None: nothing trained)
    best_version: str
    best_accuracy: float | None
    gain: float | None  # candidate accuracy - best accuracy
    regressed: bool
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

    def evidence(self, policy: MonitorPolicy) -> Evidence:
        c = self.candidate
        return {
            "cycle": float(self.cycle),
            "max_cycles": float(policy.max_cycles),
            "version": c.version if c else None,
            "accuracy": c.accuracy if c else None,
            "best_version": self.best_version,
            "best_accuracy": self.best_accuracy,
            "gain": self.gain,
            "min_gain": policy.min_gain,
            "plateau_streak": float(self.plateau_streak),
            "hallucination_rate": c.hallucination_rate if c else None,
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


def gains(history: Sequence[CycleMetrics]) -> list[float]:
    """Each evaluation's accuracy gain over the best before it (the first has none).

    >>> m = lambda a: CycleMetrics(cycle=0, version="v", accuracy=a, hallucination_rate=0)
    >>> [round(g, 2) for g in gains([m(0.1), m(0.3), m(0.2), m(0.35)])]
    [0.2, -0.1, 0.05]
    """
    out, best = [], None
    for metrics in history:
        if best is not None:
            out.append(metrics.accuracy - best)
        best = metrics.accuracy if best is None else max(best, metrics.accuracy)
    return out


def assess(
    history: Sequence[CycleMetrics],
    policy: MonitorPolicy,
    *,
    best_version: str,
    elapsed_minutes: float,
    retrains_so_far: int = 0,
    probe_baseline_auroc: float | None = None,
    probe_baseline_ece: float | None = None,
    probe_refits_so_far: int = 0,
    last_cycle_minutes: float | None = None,
    finalize_minutes: float = 0.0,
    trained: bool = True,
    cycle: int | None = None,
) -> Assessment:
    """Facts from the history. `trained=False`: this cycle made no new version (too little
    data), so the last entry is not a candidate and the cycle counts as one without gain.
    `finalize_minutes`: the time the test split will take at the end, held back from the
    wall budget so that the whole session, not just its cycles, fits in it."""
    if not history:
        raise ValueError("the monitor needs at least the initial model's evaluation")
    candidate = history[-1] if trained and len(history) > 1 else None
    earlier = history[:-1] if candidate else history
    best = _entry(earlier, best_version) or max(earlier, key=lambda m: m.accuracy)
    gain = candidate.accuracy - best.accuracy if candidate else None
    streak = _trailing_below(gains(history), policy.min_gain) + (0 if candidate else 1)
    latest = candidate or history[-1]
    weight = risk_weight(latest.probe_auroc)
    return Assessment(
        cycle=cycle if cycle is not None else latest.cycle,
        candidate=candidate,
        best_version=best.version,
        best_accuracy=best.accuracy,
        gain=gain,
        regressed=gain is not None and gain < -policy.regression_tolerance,
        plateau_streak=streak,
        data_ok=candidate is not None and candidate.train_examples >= policy.retrain_min_examples,
        elapsed_minutes=elapsed_minutes,
        last_cycle_minutes=last_cycle_minutes,
        finalize_minutes=finalize_minutes,
        retrains_so_far=retrains_so_far,
        probe_refits_so_far=probe_refits_so_far,
        probe_auroc=latest.probe_auroc,
        probe_baseline_auroc=probe_baseline_auroc,
        auroc_drop=_diff(probe_baseline_auroc, latest.probe_auroc) if candidate else None,
        ece_rise=_diff(latest.probe_ece, probe_baseline_ece) if candidate else None,
        risk_weight=weight,
        risk_signal=risk_signal_note(latest.probe_auroc, policy.min_probe_auroc_to_trust)
        + forecast_note(latest),
        risk_drop=_weighted_drop(best, candidate, weight),
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
    if p.target_accuracy is None:
        return None
    reached = max(a.best_accuracy or 0.0, a.candidate.accuracy if a.candidate else 0.0)
    if reached >= p.target_accuracy:
        return "stop", f"target reached: dev accuracy {reached:.1%} >= {p.target_accuracy:.1%}"
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
    if not a.regressed or a.candidate is None or a.gain is None:
        return None
    return "rollback", (
        f"{a.candidate.version} regressed: dev accuracy {a.candidate.accuracy:.1%} vs "
        f"{a.best_accuracy or 0:.1%} for {a.best_version} ({a.gain:+.1%}, beyond the "
        f"{p.regression_tolerance:.1%} tolerance): restoring {a.best_version}"
    )


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
    if a.candidate is None or a.probe_refits_so_far >= p.max_probe_refits:
        return None
    version = a.candidate.version
    if a.auroc_drop is not None and a.auroc_drop > p.drift_threshold:
        return "refit_probe", (
            f"probe stale on {version}: AUROC {a.probe_auroc:.2f} on fresh labels vs "
            f"{a.probe_baseline_auroc:.2f} at fit (drop {a.auroc_drop:.2f} > {p.drift_threshold:g})"
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
        if a.probe_baseline_auroc is not None and a.probe_refits_so_far < policy.max_probe_refits:
            allowed.add("refit_probe")
    return allowed


def decide(history: Sequence[CycleMetrics], policy: MonitorPolicy, **signals: Any) -> Decision:
    """The rules' Decision for the latest evaluation (`signals`: the keyword arguments of
    `assess`)."""
    return apply_rules(assess(history, policy, **signals), policy)[1]
