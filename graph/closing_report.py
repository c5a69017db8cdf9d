"""The session's closing record (`report.json`, and the `SessionEnd` event): the test split
scored once by evaluate, for the initial and the final model, beside their dev numbers,
the cycles and the monitor's decisions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.evaluate import score_on_test
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
    test: Sequence[Item],
    policy: SessionPolicy,
    emit: Emitter,
) -> dict[str, Any]:
    """`engine_of(version)`: the version's engine; `risk_fn`: the session's probe; `test`:
    the items scored."""
    final_version = state["best_version"]
    scores: dict[str, dict[str, Any]] = {}
    for role, version in (("initial", "v0"), ("final", final_version)):
        if version in {v.get("version") for v in scores.values()}:
            scores[role] = scores["initial"]  # the session never improved on v0
            continue
        scored = score_on_test(
            engine_of(version),
            task,
            test,
            policy.evaluate,
            refine=policy.refine,
            seed=policy.seed,
            on_progress=emit.progress(f"test split, {role} model"),
            risk_fn=risk_fn,
        )
        scores[role] = {"version": version, **scored}
        emit(
            f"test accuracy, {role} model ({version}): {scored['test_accuracy']:.1%} "
            f"(hallucination {scored['test_hallucination_rate']:.1%}, abstention "
            f"{scored['test_abstention_rate']:.1%})",
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


def cycle_row(metrics: CycleMetrics, decisions: list[Decision]) -> dict[str, Any]:
    """One row of the report's cycle table: the version's dev numbers (the probe's
    forecast and AUROC beside the post-generation baselines), what its cycle's acquisition
    cost, and what the monitor decided first in that cycle."""
    decided = next((d for d in decisions if d.cycle == metrics.cycle), None)
    return metrics.model_dump(exclude={"schema_version"}) | {
        "decision": decided.action if decided else None
    }
