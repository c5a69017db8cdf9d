"""The session's closing report: the test split scored once, for the initial and the final
model, beside their dev numbers, the cycles and the monitor's decisions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agents.evaluate import Measurement, measure
from agents.records import CycleMetrics, Decision
from engines.base import Engine, RiskFn
from graph.events import Emitter, TestScores
from graph.policy import SessionPolicy
from graph.state import SessionState
from tasks.base import Item, Task


def final_report(
    engine_of: Callable[[str], Engine],
    risk_fn: RiskFn | None,
    state: SessionState,
    task: Task,
    policy: SessionPolicy,
    emit: Emitter,
) -> dict[str, Any]:
    """`engine_of(version)`: the version's engine; `risk_fn`: the session's probe."""
    test = test_items(task, policy)
    final_version = state["best_version"]
    scores: dict[str, dict[str, Any]] = {}
    for role, version in (("initial", "v0"), ("final", final_version)):
        if version in {v.get("version") for v in scores.values()}:
            scores[role] = scores["initial"]  # the session never improved on v0
            continue
        measured = measure(
            engine_of(version),
            task,
            test,
            max_new_tokens=policy.evaluate.max_new_tokens,
            refine=policy.refine,
            seed=policy.seed,
            on_progress=emit.progress(f"test split, {role} model"),
            risk_fn=risk_fn,
        )
        scores[role] = {"version": version, **held_out_scores(measured)}
        emit(
            f"test accuracy, {role} model ({version}): {measured.summary.accuracy:.1%} "
            f"(hallucination {measured.summary.hallucination_rate:.1%}, abstention "
            f"{measured.summary.abstention_rate:.1%})",
            TestScores(role=role, **scores[role]),
        )
    history = state.get("history", [])
    dev = {h.version: h.accuracy for h in history}
    decisions = state.get("decisions", [])
    return {
        "initial": scores["initial"] | {"dev_accuracy": dev.get("v0")},
        "final": scores["final"] | {"dev_accuracy": dev.get(final_version)},
        "cycles": [cycle_row(h, decisions) for h in history],
        "decisions": [
            {"cycle": d.cycle, "action": d.action, "reason": d.reason} for d in decisions
        ],
        "stop_reason": decisions[-1].reason if decisions else "no decision",
        "wall_seconds": round(time.time() - state["started_at"], 1),
    }


def held_out_scores(measured: Measurement) -> dict[str, Any]:
    """A version's test-split numbers: the four rates (accuracy and hallucination rate
    over all questions, abstention rate, precision of the answered ones) and the probe's
    AURC on the version's fresh labels.

    >>> from agents.evaluate import EvalSummary
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


def test_items(task: Task, policy: SessionPolicy) -> list[Item]:
    """The test items the session scores at the end (the monitor budgets for them)."""
    return task.split("test", seed=policy.seed)[: policy.evaluate.test_limit]


def cycle_row(metrics: CycleMetrics, decisions: list[Decision]) -> dict[str, Any]:
    """One row of the report's cycle table: the version's dev numbers (the probe's
    forecast and AUROC beside the post-generation baselines), what its cycle's acquisition
    cost, and what the monitor decided first in that cycle."""
    decided = next((d for d in decisions if d.cycle == metrics.cycle), None)
    return metrics.model_dump(exclude={"schema_version"}) | {
        "decision": decided.action if decided else None
    }
