"""The session's graph state: one TypedDict, explicit reducers. Everything in it is plain
data (str, numbers, lists, dicts) or one of the agents' records (`RECORD_TYPES`, pydantic
models the checkpointer is allowed to restore), so any checkpointer can store it; bulky
things (samples, datasets, model weights, probes) live in the session's artifact folder
and the state holds their names."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from agents.records import CycleMetrics, Decision, PlannedChoice

RECORD_TYPES = (CycleMetrics, Decision, PlannedChoice)


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: later keys win.

    >>> merge_dicts({"v0": 1}, {"v1": 2})
    {'v0': 1, 'v1': 2}
    """
    return {**(left or {}), **(right or {})}


class VersionRecord(TypedDict):
    name: str  # "v0" is the model the session started from
    path: str | None  # folder with merged weights (None: the engine handed to the graph)
    parent: str | None
    fingerprint: str
    dev_accuracy: float | None


class SessionState(TypedDict, total=False):
    session_id: str
    task: str
    model: str
    started_at: float  # unix time the session started (wall budget)
    cycle: int  # the cycle in progress; 0 = the initial model's baseline
    current_version: str  # the promoted version new data is drawn from
    candidate_version: str | None  # trained, evaluated, not yet promoted
    best_version: str
    versions: Annotated[dict[str, VersionRecord], merge_dicts]
    probe: str | None  # artifact name of the probe in use
    probe_fingerprint: str | None  # the model the probe was fitted on
    probe_val_auroc: float | None  # the probe's AUROC on its own validation split
    probe_val_ece: float | None
    probe_fit_auroc: float | None  # on the probe's own held-out rows: the drift baseline
    probe_fit_ece: float | None
    probe_fit_counts: list[int] | tuple[int, int] | None  # (wrong, right) held-out rows at fit
    probe_refits: int
    stale_probe: str | None  # the probe before the last refit: measured beside the fresh one
    thresholds: dict[str, float]  # refine thresholds chosen on the probe's validation split
    attempts: str | None  # artifact name of this cycle's samples
    data: dict[str, Any] | None  # this cycle's selected data: artifact names and counts
    acquisition: dict[str, Any]  # this cycle's acquisition: candidates scored, tokens, times
    drawn_by: Annotated[list[str], operator.add]  # per cycle, the version its samples came from
    cycle_started_at: float
    train: dict[str, Any]  # the last training run's settings
    train_steps: list[dict[str, float]]  # the last run's per-step logs (GRPO: its health)
    retrain_settings: dict[str, Any] | None  # set by a retrain decision: settings to adjust
    retrains: int
    recipe: dict[str, Any] | None  # settings chosen after a rollback (and why) for the next run
    history: Annotated[list[CycleMetrics], operator.add]  # one per evaluation (v0 first)
    decisions: Annotated[list[Decision], operator.add]  # the monitor's, in order
    plans: Annotated[list[PlannedChoice], operator.add]  # planner choices, every stage
    final: dict[str, Any]  # final model: dev and test metrics, and why the session stopped
    status: str  # running | finished
