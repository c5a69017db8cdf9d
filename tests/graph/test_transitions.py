"""The graph's decisions between nodes, called directly: promotion, retrain counters,
routes, version names, thresholds and the metrics record a cycle writes."""

from __future__ import annotations

from typing import Any

import pytest

from agents.evaluate import EvalSummary, Measurement
from agents.monitor import MonitorPolicy
from agents.records import CycleMetrics, Decision
from agents.refine import RefinePolicy
from graph.policy import SessionPolicy
from graph.transitions import (
    MONITOR_ROUTES,
    after_probe,
    after_select,
    metrics_record,
    monitor_inputs,
    next_version_name,
    probe_fits,
    promotion,
    retrain_counters,
    session_thresholds,
)
from probes.calibration import Thresholds


def metrics(version: str, accuracy: float, cycle: int = 0) -> CycleMetrics:
    return CycleMetrics(cycle=cycle, version=version, accuracy=accuracy, hallucination_rate=0.0)


def decision(action: str, promote: bool = True) -> Decision:
    return Decision(action=action, reason="because", promote=promote)  # type: ignore[arg-type]


def test_promotion_makes_a_better_candidate_current_and_best() -> None:
    state: Any = {"candidate_version": "v1", "best_version": "v0"}
    history = [metrics("v0", 0.2), metrics("v1", 0.5, 1)]
    assert promotion(state, decision("loop"), history, MonitorPolicy()) == {
        "current_version": "v1",
        "best_version": "v1",
        "candidate_version": None,
    }


def test_promotion_of_a_worse_candidate_keeps_the_best_version() -> None:
    state: Any = {"candidate_version": "v2", "best_version": "v1"}
    history = [metrics("v0", 0.2), metrics("v1", 0.5, 1), metrics("v2", 0.49, 2)]
    update = promotion(state, decision("loop"), history, MonitorPolicy())
    assert update["current_version"] == "v2"  # within the tolerance: training goes on from it
    assert update["best_version"] == "v1"


@pytest.mark.parametrize("action", ["rollback", "retrain"])
def test_no_promotion_when_the_decision_forbids_it(action: str) -> None:
    state: Any = {"candidate_version": "v2", "best_version": "v1"}
    history = [metrics("v1", 0.5, 1), metrics("v2", 0.9, 2)]
    update = promotion(state, decision(action, promote=False), history, MonitorPolicy())
    assert update == {"current_version": "v1", "candidate_version": None}


def test_retrain_counts_and_retries_the_last_settings() -> None:
    state: Any = {"retrains": 1, "train": {"learning_rate": 1e-4}}
    assert retrain_counters(state, decision("retrain", promote=False)) == {
        "retrains": 2,
        "retrain_settings": {"learning_rate": 1e-4},
    }
    assert retrain_counters(state, decision("stop")) == {}


def test_every_action_has_a_route() -> None:
    assert set(MONITOR_ROUTES) == {"loop", "retrain", "refit_probe", "rollback", "stop"}
    assert MONITOR_ROUTES["retrain"] == "optimize" and MONITOR_ROUTES["stop"] == "finalize"


def test_probe_route_and_fit_index() -> None:
    assert (after_probe({}), probe_fits({})) == ("baseline", 0)
    refit: Any = {"history": [{}], "probe_refits": 1}
    assert (after_probe(refit), probe_fits(refit)) == ("acquire", 2)


def test_enough_data_depends_on_the_training_method() -> None:
    policy = SessionPolicy.model_validate(
        {"select": {"min_examples": 4}, "optimize": {"method": "dpo"}}
    )
    assert after_select({"sft": 10, "pairs": 4}, policy, 1) == ("optimize", [])
    route, notes = after_select({"sft": 10, "pairs": 3}, policy, 1)
    assert route == "monitor" and "3 < select.min_examples" in notes[0]
    grpo = SessionPolicy.model_validate(
        {"select": {"min_examples": 4}, "optimize": {"method": "grpo", "grpo_warmup_cycles": 1}}
    )
    data = {"sft": 10, "pairs": 0, "groups": 3}
    assert after_select(data, grpo, 1)[0] == "optimize", "warm-up: SFT counts examples"
    assert after_select(data, grpo, 2)[0] == "monitor", "then GRPO counts the groups"


def test_version_names_count_recorded_versions() -> None:
    assert next_version_name({"versions": {"v0": {}}}) == "v1"  # type: ignore[typeddict-item]


def test_thresholds_policy_over_chosen_over_defaults() -> None:
    chosen: Any = {"thresholds": {"low": 0.1, "high": 0.8}}
    assert session_thresholds(RefinePolicy(), chosen) == Thresholds(0.1, 0.8)
    assert session_thresholds(RefinePolicy(high_threshold=0.6), chosen) == Thresholds(0.1, 0.6)
    assert session_thresholds(RefinePolicy(), {}) == Thresholds()


def test_metrics_record_from_a_measurement() -> None:
    summary = EvalSummary(
        n=4,
        accuracy=0.5,
        hallucination_rate=0.25,
        abstention_rate=0.25,
        truncated=1,
        answered_precision=2 / 3,
    )
    measured = Measurement(
        [], summary, mean_risk=0.4, probe_auroc=0.7, probe_ece=0.1, probe_aurc=0.2
    )
    m = metrics_record(measured, cycle=2, version="v2", refine="abstain")
    assert (m.cycle, m.version, m.accuracy, m.hallucination_rate) == (2, "v2", 0.5, 0.25)
    assert (m.abstention_rate, m.truncation_rate, m.n_dev) == (0.25, 0.25, 4)
    assert (m.answered_precision, m.probe_aurc) == (2 / 3, 0.2)
    assert (m.mean_risk, m.probe_auroc, m.probe_ece, m.refine) == (0.4, 0.7, 0.1, "abstain")


def test_monitor_inputs_read_counters_and_clocks() -> None:
    state: Any = {
        "best_version": "v1",
        "started_at": 0.0,
        "cycle_started_at": 540.0,
        "retrains": 1,
        "probe_refits": 0,
        "probe_fit_auroc": 0.8,
        "candidate_version": "v2",
        "cycle": 2,
    }
    inputs = monitor_inputs(state, [metrics("v0", 0.1)], n_test=10, now=600.0)
    assert inputs.elapsed_minutes == 10.0 and inputs.last_cycle_minutes == 1.0
    assert (inputs.trained, inputs.cycle, inputs.retrains_so_far) == (True, 2, 1)
    assert inputs.probe_baseline_auroc == 0.8 and inputs.best_version == "v1"


def test_promotion_compares_versions_on_the_policys_score_never_the_evidence() -> None:
    state: Any = {"candidate_version": "v1", "best_version": "v0"}
    v0 = CycleMetrics(cycle=0, version="v0", accuracy=0.4, hallucination_rate=0.6)
    v1 = CycleMetrics(  # less accurate, more honest
        cycle=1, version="v1", accuracy=0.35, hallucination_rate=0.1, abstention_rate=0.55
    )
    misleading = Decision(action="loop", reason="", evidence={"gain": -1.0, "best_version": "v9"})
    honesty = MonitorPolicy(score="honesty", accuracy_floor=0.5)
    assert promotion(state, misleading, [v0, v1], honesty)["best_version"] == "v1"
    assert promotion(state, misleading, [v0, v1], MonitorPolicy())["best_version"] == "v0"
