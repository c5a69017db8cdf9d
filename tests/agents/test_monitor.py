"""The monitor's rules, table-driven: each row is a history, the session's counters and
the decision the rules must reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.monitor import (
    RULES,
    MonitorInputs,
    MonitorPolicy,
    decide,
    gains,
    policy_gains,
    risk_weight,
)
from agents.records import CycleMetrics
from agents.training_health import StepHealth


def m(cycle: int, acc: float, **kw: Any) -> CycleMetrics:
    values: dict[str, Any] = {
        "version": f"v{cycle}",
        "hallucination_rate": 1 - acc,
        "n_dev": 100,
        "train_examples": 0 if cycle == 0 else 40,
        "probe_auroc": 0.75,
        "probe_ece": 0.05,
        "mean_risk": 0.5,
    }
    values.update(kw)
    return CycleMetrics(cycle=cycle, accuracy=acc, **values)


@dataclass
class Case:
    name: str
    history: list[CycleMetrics]
    action: str
    reason: str  # a phrase the reason must contain
    best: str = "v0"
    signals: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    promote: bool = True


HONESTY: dict[str, Any] = {"score": "honesty", "accuracy_floor": 0.85}
SIGNALS = {"elapsed_minutes": 3.0, "probe_baseline_auroc": 0.75, "probe_baseline_ece": 0.05}

CASES = [
    Case("gain -> loop", [m(0, 0.14), m(1, 0.40)], "loop", "v1 gained +26.0%"),
    Case(
        "plateau -> stop",
        [m(0, 0.30), m(1, 0.40), m(2, 0.405, train_examples=4)],
        "stop",
        "plateau",
        best="v1",
    ),
    Case(
        "plateau waits for patience",
        [m(0, 0.30), m(1, 0.305, train_examples=4)],
        "loop",
        "gained",
        policy={"patience": 2},
    ),
    Case(
        "plateau after patience",
        [m(0, 0.30), m(1, 0.305, train_examples=4), m(2, 0.30, train_examples=4)],
        "stop",
        "for 2 evaluation(s)",
        policy={"patience": 2},
    ),
    Case(
        "regression -> rollback",
        [m(0, 0.40), m(1, 0.30)],
        "rollback",
        "restoring v0",
        promote=False,
    ),
    Case(
        "within tolerance is no regression",
        [m(0, 0.40), m(1, 0.39, train_examples=4)],
        "stop",
        "plateau",
    ),
    Case(
        "drift (AUROC) -> refit_probe",
        [m(0, 0.30), m(1, 0.45, probe_auroc=0.58)],
        "refit_probe",
        "probe stale on v1: AUROC 0.58",
        signals={"probe_baseline_counts": (100, 100)},
    ),
    Case(
        "an AUROC drop within the noise of 12 fit rows is no drift",
        [m(0, 0.30), m(1, 0.45, probe_auroc=0.58)],
        "loop",
        "v1 gained",
        signals={"probe_baseline_counts": (6, 6)},
    ),
    Case(
        "no greedy refit while the per-cycle refit keeps the probe fresh",
        [m(0, 0.30), m(1, 0.45, probe_auroc=0.58, probe_ece=0.25)],
        "loop",
        "v1 gained",
        signals={"probe_baseline_counts": (100, 100), "probe_refit_each_cycle": True},
    ),
    Case(
        "collapsed training (entropy) -> rollback, never promoted",
        [m(0, 0.30), m(1, 0.45)],
        "rollback",
        "v1's training collapsed: entropy 0.010 at step 2 is under the floor 0.05",
        signals={
            "train_steps": (
                StepHealth(1, reward=0.2, entropy=0.8, completion_length=20.0),
                StepHealth(2, reward=0.6, entropy=0.01, completion_length=22.0),
            )
        },
        promote=False,
    ),
    Case(
        "reward up while dev accuracy fell -> rollback",
        [m(0, 0.30), m(1, 0.29)],
        "rollback",
        "reward rose 0.20 -> 0.60 while dev accuracy fell 30.0% -> 29.0%",
        signals={
            "train_steps": (
                StepHealth(1, reward=0.2, entropy=0.8, completion_length=20.0),
                StepHealth(2, reward=0.6, entropy=0.7, completion_length=22.0),
            )
        },
        promote=False,
    ),
    Case(
        "drift (calibration) -> refit_probe",
        [m(0, 0.30), m(1, 0.45, probe_ece=0.25)],
        "refit_probe",
        "ECE rose 0.20",
    ),
    Case(
        "drift but refits spent -> loop",
        [m(0, 0.30), m(1, 0.45, probe_auroc=0.58)],
        "loop",
        "gained",
        signals={"probe_refits_so_far": 1},
    ),
    Case(
        "failed update on good data -> retrain",
        [m(0, 0.30), m(1, 0.305, train_examples=40)],
        "retrain",
        "on good data (40 examples)",
        promote=False,
    ),
    Case(
        "failed update, retrains spent -> stop",
        [m(0, 0.30), m(1, 0.305, train_examples=40)],
        "stop",
        "plateau",
        signals={"retrains_so_far": 1},
    ),
    Case(
        "after a rollback, fresh data that fails -> retrain",
        [m(0, 0.40), m(1, 0.30), m(2, 0.40, train_examples=40)],
        "retrain",
        "retraining from v0",
        promote=False,
    ),
    Case(
        "cycle budget -> stop",
        [m(0, 0.1), m(1, 0.3), m(2, 0.5)],
        "stop",
        "cycle budget spent (2 of 2",
        policy={"max_cycles": 2},
        best="v1",
    ),
    Case(
        "wall budget -> stop",
        [m(0, 0.1), m(1, 0.3)],
        "stop",
        "wall budget spent",
        signals={"elapsed_minutes": 12.5},
    ),
    Case(
        "projected wall budget -> stop",
        [m(0, 0.1), m(1, 0.3)],
        "stop",
        "another cycle would overrun",
        signals={"elapsed_minutes": 10.0, "last_cycle_minutes": 3.0},
    ),
    Case(
        "the test split's time is held back from the wall budget -> stop",
        [m(0, 0.1), m(1, 0.3)],
        "stop",
        "for the test split",
        signals={"elapsed_minutes": 7.0, "last_cycle_minutes": 3.0, "finalize_minutes": 2.5},
    ),
    Case(
        "the same cycle fits without the test split's time -> loop",
        [m(0, 0.1), m(1, 0.3)],
        "loop",
        "gained",
        signals={"elapsed_minutes": 7.0, "last_cycle_minutes": 3.0, "finalize_minutes": 1.5},
    ),
    Case(
        "budget with a regressed candidate: stop, not promoted",
        [m(0, 0.5), m(1, 0.3)],
        "stop",
        "v1 regressed and is not promoted",
        signals={"elapsed_minutes": 13.0},
        promote=False,
    ),
    Case(
        "target reached -> stop",
        [m(0, 0.3), m(1, 0.62)],
        "stop",
        "target reached",
        policy={"target_accuracy": 0.6},
    ),
    Case(
        "flat accuracy, trusted risk falling -> loop",
        [m(0, 0.30), m(1, 0.305, train_examples=4, mean_risk=0.3, probe_auroc=0.8)],
        "loop",
        "mean dev risk fell",
        signals={"probe_baseline_auroc": 0.8},
    ),
    Case(
        "flat accuracy, near-chance risk falling -> stop",
        [
            m(0, 0.30, probe_auroc=0.55),
            m(1, 0.305, train_examples=4, mean_risk=0.1, probe_auroc=0.55),
        ],
        "stop",
        "plateau",
        signals={"probe_baseline_auroc": 0.55},
    ),
    Case(
        "no data this cycle -> stop",
        [m(0, 0.0)],
        "stop",
        "no usable training data",
        signals={"trained": False, "cycle": 1},
    ),
    Case(
        "no data this cycle, patience left -> loop",
        [m(0, 0.0)],
        "loop",
        "no new version this cycle",
        signals={"trained": False, "cycle": 1},
        policy={"patience": 2},
    ),
    # -- honesty: versions compared on accuracy - penalty x hallucination, with a floor ---
    Case(
        "honesty: fewer hallucinations at nearly the same accuracy -> loop",
        [m(0, 0.40), m(1, 0.36, hallucination_rate=0.2, abstention_rate=0.44)],
        "loop",
        "v1 gained +36.0%",
        policy=HONESTY,
    ),
    Case(
        "honesty: all-abstain scores above v0 and is still never promoted",
        [m(0, 0.40), m(1, 0.0, hallucination_rate=0.0, abstention_rate=1.0)],
        "rollback",
        "v1 abstained on every dev question: restoring v0",
        policy=HONESTY,
        promote=False,
    ),
    Case(
        "honesty: below the accuracy floor -> rollback",
        [m(0, 0.40), m(1, 0.30, hallucination_rate=0.05, abstention_rate=0.65)],
        "rollback",
        "below the floor 34.0%",
        policy=HONESTY,
        promote=False,
    ),
    Case(
        "honesty: more hallucinations at the same accuracy -> rollback",
        [m(0, 0.40, hallucination_rate=0.3), m(1, 0.40, hallucination_rate=0.6)],
        "rollback",
        "dev honesty -20.0% (accuracy 40.0%, hallucination 60.0%) vs dev honesty +10.0%",
        policy=HONESTY,
        promote=False,
    ),
    Case(
        "accuracy: the same honest version is an accuracy regression",
        [m(0, 0.40), m(1, 0.36, hallucination_rate=0.2, abstention_rate=0.44)],
        "rollback",
        "dev accuracy 36.0% vs dev accuracy 40.0%",
        promote=False,
    ),
    Case(
        "accuracy: all-abstain never promoted even when v0 was never right",
        [m(0, 0.0), m(1, 0.0, hallucination_rate=0.0, abstention_rate=1.0)],
        "rollback",
        "abstained on every dev question",
        promote=False,
    ),
    Case(
        "all-abstain at the budget: stop, not promoted",
        [m(0, 0.40), m(1, 0.0, hallucination_rate=0.0, abstention_rate=1.0)],
        "stop",
        "v1 regressed and is not promoted",
        policy=HONESTY,
        signals={"elapsed_minutes": 13.0},
        promote=False,
    ),
    Case(
        "hallucination target reached above the floor -> stop",
        [m(0, 0.40), m(1, 0.36, hallucination_rate=0.18, abstention_rate=0.46)],
        "stop",
        "target reached: v1's dev hallucination rate 18.0% <= 20.0% with accuracy 36.0%",
        policy={**HONESTY, "target_hallucination_rate": 0.2},
    ),
    Case(
        "hallucination target met only by abstaining below the floor -> rollback",
        [m(0, 0.40), m(1, 0.10, hallucination_rate=0.05, abstention_rate=0.85)],
        "rollback",
        "below the floor",
        policy={**HONESTY, "target_hallucination_rate": 0.2},
        promote=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rules(case: Case) -> None:
    policy = MonitorPolicy(**case.policy)
    inputs = MonitorInputs(best_version=case.best, **{**SIGNALS, **case.signals})
    decision = decide(case.history, policy, inputs)
    assert decision.action == case.action, decision.reason
    assert case.reason in decision.reason
    assert decision.promote is case.promote
    assert decision.source == "rules"
    # the evidence is what the rules read: this cycle's candidate, the counters, the budgets
    signals = {**SIGNALS, **case.signals}
    latest = case.history[-1]
    candidate = latest if signals.get("trained", True) and len(case.history) > 1 else None
    evidence = decision.evidence
    assert evidence["cycle"] == signals.get("cycle", latest.cycle)
    assert evidence["version"] == (candidate.version if candidate else None)
    assert evidence["accuracy"] == (candidate.accuracy if candidate else None)
    assert evidence["elapsed_minutes"] == signals["elapsed_minutes"]
    assert evidence["retrains_so_far"] == signals.get("retrains_so_far", 0)
    assert evidence["probe_baseline_auroc"] == signals["probe_baseline_auroc"]
    assert (evidence["max_cycles"], evidence["max_wall_minutes"], evidence["min_gain"]) == (
        policy.max_cycles,
        policy.max_wall_minutes,
        policy.min_gain,
    )
    assert evidence["risk_weight"] == risk_weight(latest.probe_auroc)


def test_near_chance_probe_is_discounted_in_the_evidence() -> None:
    history = [m(0, 0.14, probe_auroc=0.55), m(1, 0.40, probe_auroc=0.55)]
    decision = decide(
        history,
        MonitorPolicy(),
        MonitorInputs(best_version="v0", elapsed_minutes=2.0, probe_baseline_auroc=0.55),
    )
    assert (
        decision.evidence["risk_signal"]
        == "probe near chance (AUROC 0.55): risk signal informs little"
    )
    assert decision.evidence["risk_weight"] == pytest.approx(0.1)
    trusted = decide(
        [m(0, 0.1), m(1, 0.4, probe_auroc=0.8)],
        MonitorPolicy(),
        MonitorInputs(best_version="v0", elapsed_minutes=2.0),
    )
    assert (
        trusted.evidence["risk_signal"]
        == "probe AUROC 0.80 on fresh labels: risk signal weighted 0.60"
    )


def test_unknown_probe_auroc_is_said_so() -> None:
    decision = decide(
        [m(0, 0.1), m(1, 0.4, probe_auroc=None)],
        MonitorPolicy(),
        MonitorInputs(best_version="v0", elapsed_minutes=1),
    )
    assert (
        decision.evidence["risk_signal"]
        == "probe AUROC on fresh labels unknown: risk signal not used"
    )
    assert decision.evidence["risk_weight"] == 0.0


def test_hard_rules_come_first() -> None:
    assert [name for name, _ in RULES][:3] == ["target", "budget", "regression"]
    assert RULES[-1][0] == "loop"


def test_gains_and_weights() -> None:
    assert [round(g, 2) for g in gains([m(0, 0.1), m(1, 0.3), m(2, 0.2)])] == [0.2, -0.1]
    assert risk_weight(0.5) == 0.0 and risk_weight(0.75) == 0.5


def test_empty_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="initial model"):
        decide([], MonitorPolicy(), MonitorInputs(best_version="v0", elapsed_minutes=0.0))


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"score": "honesty"}, "set monitor.accuracy_floor"),
        ({"target_hallucination_rate": 0.2}, "set monitor.accuracy_floor"),
    ],
)
def test_honesty_needs_an_accuracy_floor(settings: dict[str, Any], fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        MonitorPolicy(**settings)


def test_honesty_gains_skip_versions_that_may_never_be_promoted() -> None:
    policy = MonitorPolicy(**HONESTY)
    abstains = m(1, 0.0, hallucination_rate=0.0, abstention_rate=1.0)
    history = [m(0, 0.40), abstains, m(2, 0.38, hallucination_rate=0.3, abstention_rate=0.32)]
    # v2 (+8%) is compared with v0 (-20%), not with the all-abstain v1 (0%): +28%, not +8%
    assert [round(g, 2) for g in policy_gains(history, policy)] == [0.2, 0.28]
