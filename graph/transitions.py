"""What the graph decides between its nodes, as pure functions of the state, the policy
and what a node produced: routes, counters, version names, state updates. The nodes call
them; tests call them directly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

from agents.acquire import CyclePrompts
from agents.evaluate import Measurement
from agents.monitor import MonitorInputs, MonitorPolicy, candidate_gain, finalize_minutes
from agents.optimize import OptimizePolicy, TrainResult, TrainSettings, gentler_settings, method_at
from agents.probe import FittedProbe
from agents.records import CycleMetrics, Decision, PlannedChoice
from agents.refine import RefinePolicy
from agents.selection import usable_count
from agents.training_health import step_health
from graph.events import Emitter
from graph.policy import SessionPolicy
from graph.state import SessionState
from graph.versions import version_record
from probes.calibration import Thresholds, threshold_for_accuracy_floor
from storage.layout import SessionLayout

ProbeRoute = Literal["baseline", "acquire"]  # after a fit on answers: a first fit, or a refit
MonitorRoute = Literal["acquire", "optimize", "fit_probe_on_answers", "finalize"]
MONITOR_ROUTES: dict[str, MonitorRoute] = {
    "loop": "acquire",
    "rollback": "acquire",
    "retrain": "optimize",
    "refit_probe": "fit_probe_on_answers",
    "stop": "finalize",
}


def history_of(state: SessionState) -> list[CycleMetrics]:
    return list(state.get("history", []))


# -- probe ------------------------------------------------------------------------------


def probe_fits(state: SessionState) -> int:
    """The index of the probe fit about to run: 0 at the start, one more per refit.

    >>> probe_fits({}), probe_fits({"probe_refits": 0, "history": [...]})
    (0, 1)
    """
    return state.get("probe_refits", 0) + (1 if state.get("history") else 0)


def after_probe(state: SessionState) -> ProbeRoute:
    """The first fit is followed by the initial model's baseline; a refit by a new cycle.

    >>> after_probe({}), after_probe({"history": [...]})
    ('baseline', 'acquire')
    """
    return "acquire" if state.get("history") else "baseline"


def probe_update(fitted: FittedProbe, fingerprint: str, fits: int) -> dict[str, Any]:
    return {
        "probe": fitted.name,
        "probe_fingerprint": fingerprint,
        "probe_val_auroc": fitted.val_auroc,
        "probe_val_ece": fitted.val_ece,
        "probe_fit_auroc": fitted.held_out_auroc,
        "probe_fit_ece": fitted.held_out_ece,
        "probe_fit_counts": None
        if fitted.held_out_counts is None
        else list(fitted.held_out_counts),
        "probe_refits": fits,
        "thresholds": {"low": fitted.thresholds.low, "high": fitted.thresholds.high},
    }


def loop_probe_update(fitted: FittedProbe, fingerprint: str, state: SessionState) -> dict[str, Any]:
    """A probe refit on the loop's samples replaces the session's probe, which becomes the
    stale one the next evaluation measures beside it, and brings refine's thresholds chosen
    for it (another probe's would read its risks on the wrong scale); no fit keeps the
    probe it had.

    >>> no_fit = FittedProbe(None, None, None, None, None, None, "none", Thresholds())
    >>> loop_probe_update(no_fit, "fp", {"probe": "probes/probe-0"})
    {}
    >>> fit = FittedProbe("probes/cycle-1", "f", 0.7, None, None, None, "d", Thresholds(0.2, 0.4))
    >>> loop_probe_update(fit, "fp", {"probe": "probes/probe-0"})["thresholds"]
    {'low': 0.2, 'high': 0.4}
    """
    if fitted.name is None:
        return {}
    return {
        "probe": fitted.name,
        "stale_probe": state.get("probe"),
        "probe_fingerprint": fingerprint,
        "probe_val_auroc": fitted.val_auroc,
        "probe_val_ece": fitted.val_ece,
        "probe_fit_auroc": fitted.held_out_auroc,
        "probe_fit_ece": fitted.held_out_ece,
        "probe_fit_counts": None,  # soft pass-rate labels: no class counts
        "thresholds": {"low": fitted.thresholds.low, "high": fitted.thresholds.high},
    }


def refit_message(fitted: FittedProbe) -> str:
    """
    >>> refit_message(FittedProbe(None, None, None, None, None, None, "none (x)", Thresholds()))
    "probe refit on this version's samples: none (x); the session keeps its probe"
    """
    keeps = "; the session keeps its probe" if fitted.name is None else ""
    return f"probe refit on this version's samples: {fitted.description}{keeps}"


def session_thresholds(policy: RefinePolicy, state: SessionState) -> Thresholds:
    """The policy's refine thresholds, else those chosen on the probe's validation split,
    else the defaults.

    >>> session_thresholds(RefinePolicy(low_threshold=0.2), {"thresholds": {"low": 0.1, "high": 0.9}})
    Thresholds(low=0.2, high=0.9)
    >>> session_thresholds(RefinePolicy(), {}) == Thresholds()
    True
    """
    chosen = Thresholds.chosen(state.get("thresholds"))
    return Thresholds(
        low=chosen.low if policy.low_threshold is None else policy.low_threshold,
        high=chosen.high if policy.high_threshold is None else policy.high_threshold,
    )


# -- select and optimize ------------------------------------------------------------------


def after_select(
    data: dict[str, Any], policy: SessionPolicy, cycle: int
) -> tuple[Literal["optimize", "monitor"], list[str]]:
    """Train when the cycle selected enough data for the cycle's training method; else
    straight to the monitor, with the note saying why.

    >>> after_select({"sft": 3, "pairs": 0}, SessionPolicy(), 1)
    ('monitor', ['too little data (3 < select.min_examples): no training this cycle'])
    """
    method = method_at(policy.optimize, cycle)
    usable = usable_count(method, data["sft"], data["pairs"], data.get("groups", 0))
    if usable >= policy.select.min_examples:
        return "optimize", []
    return "monitor", [f"too little data ({usable} < select.min_examples): no training this cycle"]


def selection_message(data: dict[str, Any], strategy: str) -> str:
    """
    >>> selection_message({"sft": 5, "pairs": 2}, "correct_only")
    'selected 5 examples, 2 pairs (correct_only)'
    """
    return f"selected {data['sft']} examples, {data['pairs']} pairs ({strategy})"


def next_version_name(state: SessionState) -> str:
    """v1, v2, ...: one more than the versions so far (v0 included once recorded).

    >>> next_version_name({"versions": {"v0": {}, "v1": {}}})
    'v2'
    """
    return f"v{len(state.get('versions', {}))}"


def training_message(name: str, parent: str, settings: TrainSettings) -> str:
    return (
        f"training {name} from {parent}: {settings.method}, lr {settings.learning_rate:g}, "
        f"{settings.epochs:g} epochs"
    )


def trained_message(name: str, result: TrainResult) -> str:
    """The trace line of a finished training run (the loss to 4 significant digits).

    >>> from pathlib import Path
    >>> trained_message("v1", TrainResult(Path("v1"), 2, 0.6425477266311646, 1.0, 8))
    'v1: 2 steps, loss 0.6425'
    """
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4g}"
    return f"{name}: {result.steps} steps, loss {loss}"


def trained_update(
    name: str, parent: str, result: TrainResult, fingerprint: str, settings: TrainSettings
) -> dict[str, Any]:
    return {
        "candidate_version": name,
        "versions": {
            name: version_record(
                name, SessionLayout.merged_of(result.version_dir), parent, fingerprint
            )
        },
        "train": asdict(settings),
        "train_steps": list(getattr(result, "step_logs", ())),
        "retrain_settings": None,
    }


# -- evaluate and monitor -----------------------------------------------------------------


def metrics_record(measured: Measurement, *, cycle: int, version: str, refine: str) -> CycleMetrics:
    s, risk = measured.summary, measured.mean_risk
    return CycleMetrics(
        cycle=cycle,
        version=version,
        accuracy=s.accuracy,
        hallucination_rate=s.hallucination_rate,
        abstention_rate=s.abstention_rate,
        answered_precision=s.answered_precision,
        truncation_rate=s.truncated / max(s.n, 1),
        mean_risk=measured.mean_risk,
        probe_auroc=measured.probe_auroc,
        probe_ece=measured.probe_ece,
        probe_aurc=measured.probe_aurc,
        predicted_accuracy=None if risk is None else 1.0 - risk,
        stale_probe_auroc=measured.stale_auroc,
        stale_probe_ece=measured.stale_ece,
        logprob_auroc=measured.logprob_auroc,
        entropy_auroc=measured.entropy_auroc,
        n_dev=s.n,
        refine=refine,
    )


def candidate_metrics(metrics: CycleMetrics, state: SessionState, now: float) -> CycleMetrics:
    """The candidate's dev metrics with what made it: the cycle's acquisition, examples
    and wall time."""
    data = state.get("data") or {}
    return metrics.model_copy(
        update=(state.get("acquisition") or {})
        | {
            "train_examples": data.get("groups", data.get("sft", 0)),
            "wasted_share": data.get("wasted_share"),
            "mixed_share": None if data.get("wasted_share") is None else 1 - data["wasted_share"],
            "seconds": now - state.get("cycle_started_at", now),
        }
    )


def acquisition_record(
    prompts: CyclePrompts, sampled: int, tokens: int, sampling_seconds: float
) -> dict[str, Any]:
    """What one cycle's acquisition cost, and the mixed groups it expected (the cycle's
    metrics carry it).

    >>> acquisition_record(CyclePrompts([], [], []), 4, 100, 2.5)["tokens_sampled"]
    100
    """
    return {
        "candidates_scored": prompts.scored,
        "prompts_sampled": sampled,
        "tokens_sampled": tokens,
        "scoring_seconds": prompts.scoring_seconds,
        "sampling_seconds": sampling_seconds,
        "predicted_mixed_share": prompts.predicted_mixed_share,
    }


def monitor_inputs(
    state: SessionState,
    history: list[CycleMetrics],
    *,
    n_test: int,
    now: float,
    refit_each_cycle: bool = False,
) -> MonitorInputs:
    """What the monitor reads besides the history: the session's counters and clocks, the
    probe's fit, and the last training run's per-step health."""
    counts = state.get("probe_fit_counts")
    return MonitorInputs(
        best_version=state["best_version"],
        elapsed_minutes=(now - state["started_at"]) / 60,
        retrains_so_far=state.get("retrains", 0),
        probe_baseline_auroc=state.get("probe_fit_auroc"),
        probe_baseline_ece=state.get("probe_fit_ece"),
        probe_refits_so_far=state.get("probe_refits", 0),
        last_cycle_minutes=(now - state.get("cycle_started_at", now)) / 60,
        finalize_minutes=finalize_minutes(history, n_test),
        trained=bool(state.get("candidate_version")),
        cycle=state.get("cycle", 0),
        probe_baseline_counts=None if counts is None else (int(counts[0]), int(counts[1])),
        probe_refit_each_cycle=refit_each_cycle,
        train_steps=tuple(step_health(state.get("train_steps") or [])),
    )


def promotion(
    state: SessionState, decision: Decision, history: list[CycleMetrics], policy: MonitorPolicy
) -> dict[str, Any]:
    """Promote the evaluated candidate when the decision allows it (never past the
    regression guard); otherwise the current version is the best one. Best = highest
    score so far: the candidate, the latest evaluation, is the best when it gains on the
    best version in the policy's score (`monitor.score`), as the monitor measured it."""
    candidate, best = state.get("candidate_version"), state["best_version"]
    if not candidate or not decision.promote:
        return {"current_version": best, "candidate_version": None}
    evaluated = len(history) > 1 and history[-1].version == candidate
    better = evaluated and candidate_gain(history, policy, best) > 0
    return {
        "current_version": candidate,
        "best_version": candidate if better else best,
        "candidate_version": None,
    }


def retrain_counters(state: SessionState, decision: Decision) -> dict[str, Any]:
    """A retrain counts against max_retrains and retries the last run's settings.

    >>> d = lambda action: Decision(action=action, reason="")
    >>> retrain_counters({"retrains": 0, "train": {"epochs": 3}}, d("retrain"))
    {'retrains': 1, 'retrain_settings': {'epochs': 3}}
    >>> retrain_counters({}, d("loop"))
    {}
    """
    if decision.action != "retrain":
        return {}
    return {
        "retrains": state.get("retrains", 0) + 1,
        "retrain_settings": state.get("train") or None,
    }


def rollback_recipe(
    state: SessionState, decision: Decision, policy: OptimizePolicy
) -> tuple[Decision, dict[str, Any]]:
    """After a rollback the next training run changes its recipe instead of repeating the
    one that failed: the rolled-back run's settings made gentler (`gentler_settings`),
    said in the decision's evidence (`next_recipe`) and kept in the state for optimize.

    >>> d = Decision(action="rollback", reason="v2 regressed")
    >>> d, update = rollback_recipe({"train": {"learning_rate": 2e-4}}, d, OptimizePolicy())
    >>> d.evidence["next_recipe"], update["recipe"]["learning_rate"]
    ('v2 regressed: learning rate 0.0002 -> 0.0001', 0.0001)
    """
    if decision.action != "rollback" or not state.get("train"):
        return decision, {}
    settings, why = gentler_settings(state["train"], policy, decision.reason)
    evidence = {**decision.evidence, "next_recipe": why}
    return decision.model_copy(update={"evidence": evidence}), {"recipe": settings | {"why": why}}


# -- the gate the session ships ----------------------------------------------------------


def floor_gate_source(state: SessionState, policy: SessionPolicy) -> tuple[int, float, str] | None:
    """With `refine.gate_rule: accuracy_floor` and a probe fitted on the best version: the
    cycle whose dev answers of that version choose the gate's cut-off, the initial model's
    dev accuracy and the probe; None where the rule does not apply (another rule, a cut-off the
    policy fixes, no probe on the best version).

    >>> from agents.records import CycleMetrics
    >>> policy = SessionPolicy.model_validate(
    ...     {"refine": {"gate_rule": "accuracy_floor"}, "monitor": {"accuracy_floor": 0.85}}
    ... )
    >>> history = [CycleMetrics(cycle=0, version="v0", accuracy=0.4, hallucination_rate=0.6),
    ...            CycleMetrics(cycle=1, version="v1", accuracy=0.5, hallucination_rate=0.5)]
    >>> state = {"best_version": "v1", "probe": "probes/cycle-1", "probe_fingerprint": "f1",
    ...          "versions": {"v1": {"fingerprint": "f1"}}, "history": history}
    >>> floor_gate_source(state, policy), floor_gate_source(state, SessionPolicy())
    ((1, 0.4, 'probes/cycle-1'), None)
    >>> floor_gate_source({**state, "probe_fingerprint": "f0"}, policy) is None
    True
    """
    refine, best, probe = policy.refine, state["best_version"], state.get("probe")
    if refine.gate_rule != "accuracy_floor" or refine.high_threshold is not None:
        return None
    if not probe or state.get("probe_fingerprint") != state["versions"][best]["fingerprint"]:
        return None
    history = history_of(state)
    evaluated = [h.cycle for h in history if h.version == best]
    initial = [h.accuracy for h in history if h.version == "v0"]
    return (evaluated[-1], initial[0], probe) if evaluated and initial else None


def floor_gate(
    risks: Sequence[float], correct: Sequence[bool], min_accuracy: float, saved: Thresholds
) -> dict[str, float]:
    """The thresholds the session ships under `accuracy_floor`: abstain above the lowest
    risk cut-off whose gated dev accuracy keeps `min_accuracy` (`high`, within [0, 1]);
    `low` (risk_adaptive's greedy bound) as chosen before, never above it.

    >>> floor_gate([0.1, 0.2, 0.8, 0.9], [True, False, True, False], 0.5, Thresholds(0.3, 0.7))
    {'low': 0.3, 'high': 0.8}
    >>> floor_gate([0.1, 0.2], [False, True], 0.0, Thresholds(0.3, 0.7))  # abstain on all
    {'low': 0.0, 'high': 0.0}
    """
    high = min(max(threshold_for_accuracy_floor(risks, correct, min_accuracy), 0.0), 1.0)
    return {"low": min(saved.low, high), "high": high}


def best_model_record(state: SessionState, policy: SessionPolicy) -> dict[str, Any]:
    """What the session made, for `answer`/`eval`/`serve --session`: the best version
    (its merged weights; None: the session's own model), and the gate to serve it with:
    the probe when it was fitted on that very version (else None, and on what it was),
    the thresholds chosen for it, and refine's abstention text.

    >>> state = {"model": "m", "best_version": "v1", "probe": "probes/cycle-1",
    ...          "probe_fingerprint": "f0", "thresholds": {"low": 0.2, "high": 0.6},
    ...          "versions": {"v1": {"path": "versions/v1/merged", "fingerprint": "f1"}}}
    >>> record = best_model_record(state, SessionPolicy())
    >>> record["version"], record["probe"], record["probe_fitted_on"]
    ('v1', None, 'f0')
    """
    best = state["best_version"]
    version = state["versions"][best]
    fingerprint = version["fingerprint"]
    fitted_on = state.get("probe_fingerprint")
    initial = state["versions"].get("v0", version)
    cycles = [h.cycle for h in state.get("history", []) if h.version == best]
    return {
        "task": state.get("task", ""),
        "model": state["model"],
        "base_fingerprint": initial["fingerprint"],
        "initial": {
            "version": "v0",
            "path": initial["path"],
            "model": state["model"],
            "fingerprint": initial["fingerprint"],
        },
        "version": best,
        "cycle": cycles[-1] if cycles else 0,
        "path": version["path"],
        "fingerprint": fingerprint,
        "probe": state.get("probe") if fitted_on == fingerprint else None,
        "probe_fitted_on": fitted_on,
        "thresholds": asdict(session_thresholds(policy.refine, state)),
        "gate_rule": policy.refine.gate_rule,
        "abstention_text": policy.refine.abstention_text,
        # what `eval --session` reads as the session's splits and answer budget
        "split_seed": policy.seed,
        "max_new_tokens": policy.evaluate.max_new_tokens,
    }


def plan_record(choice: PlannedChoice, cycle: int, emit: Emitter) -> PlannedChoice:
    """Record a planner's choice, stamped with its cycle, in the state and the event stream."""
    choice = choice.model_copy(update={"cycle": cycle})
    emit(f"{choice.stage} plan ({choice.source}): {choice.reason}", choice)
    return choice
