"""What a session's `report.html` shows, read back from what the session stored: its
events (cycle metrics, decisions with their evidence, the closing report) and its
artifacts (probe sweeps, dev answers, samples with their verdicts, training data). Works
for a session that is still running or was interrupted: what is missing is left out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.records import CycleMetrics, Decision
from graph.events import NodeEnd, SessionEnd, payload
from storage import ArtifactStore, Event, SessionInfo
from storage.layout import SessionLayout


@dataclass(frozen=True)
class ProbeSweep:
    """One fitted probe and every candidate its fit compared (`rows`: feature, kind,
    layers, val_auroc, chosen)."""

    name: str
    metric: str
    rows: list[dict[str, Any]]


@dataclass
class SessionReport:
    """Everything the page shows, as plain data."""

    session_id: str
    status: str
    task: str = ""
    model: str = ""
    cycles: list[dict[str, Any]] = field(default_factory=list)  # one per evaluated version
    decisions: list[dict[str, Any]] = field(default_factory=list)  # the monitor's, in order
    final: dict[str, Any] | None = None  # the closing report (None: the session did not end)
    probes: list[ProbeSweep] = field(default_factory=list)
    dev_answers: list[dict[str, Any]] = field(default_factory=list)  # every version's dev answers
    samples: list[dict[str, Any]] = field(default_factory=list)  # every sampled completion
    # per online-RL run (GRPO): its cycle, groups, and each optimizer step's health
    training: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stop_reason(self) -> str | None:
        return self.final.get("stop_reason") if self.final else None


def collect_report(
    session_id: str, info: SessionInfo | None, events: Sequence[Event], folder: Path
) -> SessionReport:
    """The report of session `session_id` from its registry entry, its logged events and
    its folder of artifacts."""
    report = SessionReport(
        session_id,
        info.shown_status if info else "unknown",
        task=info.task if info else "",
        model=info.model if info else "",
    )
    for event in events:
        add_event(report, event)
    report.probes = probe_sweeps(folder)
    report.dev_answers = dev_answers(folder, report.cycles)
    report.samples = samples(folder)
    return report


def add_event(report: SessionReport, event: Event) -> None:
    """Fold one logged event into the report: a version's dev metrics, a decision, or
    the closing report.

    >>> r = SessionReport("s", "finished")
    >>> add_event(r, Event(session_id="s", key="c1/monitor/0", kind="decision", cycle=1,
    ...     ts=0, message="stop: done", data_type="decision",
    ...     data={"cycle": 1, "action": "stop", "reason": "done", "evidence": {}}))
    >>> r.decisions[0]["action"], r.decisions[0]["cycle"]
    ('stop', 1)
    """
    record = payload(event)
    if isinstance(record, NodeEnd) and event.node == "optimize":
        summary = record.summary
        if summary.get("step_logs"):
            report.training.append(
                {
                    "cycle": event.cycle,
                    "groups": summary.get("groups"),
                    "zero_std_share": summary.get("zero_std_share"),
                    "steps": summary["step_logs"],
                }
            )
    elif isinstance(record, CycleMetrics):
        report.cycles.append(record.model_dump())
    elif isinstance(record, Decision):
        report.decisions.append(record.model_dump())
    elif isinstance(record, SessionEnd):
        report.final = record.model_dump()


def probe_sweeps(folder: Path) -> list[ProbeSweep]:
    """Every probe the session saved with a sweep table, in the order it fitted them
    (the manifest lists artifacts in write order)."""
    from probes.sweep_table import load_sweep_table

    found = []
    for artifact in ArtifactStore(folder).entries():
        table = load_sweep_table(folder / artifact.path) if artifact.kind == "probe" else None
        if table is not None:
            found.append(ProbeSweep(artifact.name, table["metric"], table["rows"]))
    return found


def dev_answers(folder: Path, cycles: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dev answers of each evaluated version, tagged with its cycle and version."""
    rows = []
    for cycle in cycles:
        path = folder / SessionLayout.dev_answers_name(cycle["cycle"], cycle["version"])
        for row in read_jsonl(path):
            rows.append({"cycle": cycle["cycle"], "version": cycle["version"], **row})
    return rows


def samples(folder: Path) -> list[dict[str, Any]]:
    """Every completion acquire sampled, one row each, cycle by cycle (`cycle_samples`)."""
    cycles = sorted(_cycle_number(path) for path in folder.glob(SessionLayout.ATTEMPTS_GLOB))
    return [row for cycle in cycles for row in cycle_samples(folder, cycle)]


def cycle_samples(folder: Path, cycle: int) -> list[dict[str, Any]]:
    """Every completion acquire sampled in `cycle`, one row each: its prompt, text, the
    prompt's risk, the verdict select saved (None before select labelled it) and whether
    select put it in the training set. The one reader of saved verdicts: the page and
    MLflow's samples table both show these."""
    verdicts = read_jsonl(folder / SessionLayout.verdicts_name(cycle))
    chosen = {
        (row["item_id"], row["completion"])
        for row in read_jsonl(folder / SessionLayout.sft_name(cycle))
    }
    rows = []
    for index, attempt in enumerate(read_jsonl(folder / SessionLayout.attempts_name(cycle))):
        labels = verdicts[index]["correct"] if index < len(verdicts) else []
        rows += attempt_rows(cycle, attempt, labels, chosen)
    return rows


def attempt_rows(
    cycle: int, attempt: dict[str, Any], labels: Sequence[bool], chosen: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """One row per sample of an `attempts.jsonl` row.

    >>> attempt = {"item": {"id": "a1", "prompt": "1+1?"}, "risk": 0.2,
    ...            "samples": [{"text": "2", "finish_reason": "stop"}]}
    >>> attempt_rows(1, attempt, [True], {("a1", "2")})[0]["selected"]
    True
    """
    item = attempt["item"]
    return [
        {
            "cycle": cycle,
            "item_id": item["id"],
            "prompt": item["prompt"],
            "text": sample["text"],
            "finish_reason": sample.get("finish_reason"),
            "risk": attempt.get("risk"),
            "correct": labels[n] if n < len(labels) else None,
            "selected": (item["id"], sample["text"]) in chosen,
        }
        for n, sample in enumerate(attempt["samples"])
    ]


def _cycle_number(path: Path) -> int:
    return SessionLayout.cycle_number(path.parent.name)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file ([] when it is not there)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
