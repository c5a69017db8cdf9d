"""The session in MLflow: one more consumer of the graph's event stream.

Events are gathered per trace key (`cycle-N`, or `finalize`); when the first event of the
next key arrives, the finished cycle is written whole: its metrics (step = cycle), its
decisions (tags and a table), its samples and training data (tables), model-version
references and one trace with a span per node run, the node's events on its span. A
finished cycle is therefore in MLflow while the next one runs, and no trace waits in
memory for the session's end. A resumed session reads its event log first and writes
the cycles its run does not have yet, so an interruption loses nothing."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.records import CycleMetrics, Decision
from graph.events import NodeEnd, SessionEnd, TestScores, payload, records_of
from graph.policy import SECRET_KEYS
from storage import ArtifactStore, Event, mask_password
from storage.layout import SessionLayout
from storage.mlflow_store import SpanRecord, TraceRecord, TrackedRun, open_run
from storage.registry import register_session, registered_name
from views.report_data import cycle_samples, read_jsonl

if TYPE_CHECKING:
    from graph.session import Session

log = logging.getLogger(__name__)

NOT_METRICS = {"schema_version", "cycle", "version", "refine", "role"}
RENAMED = {"accuracy": "dev_accuracy", "final_loss": "train_loss"}


def trace_key(event: Event) -> str:
    """The trace an event belongs to: its cycle's, or the closing `finalize`."""
    return "finalize" if event.node == "finalize" else f"cycle-{event.cycle or 0}"


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested policy as dotted params, URLs with passwords masked.

    >>> flat_params({"store": "redis://:pw@h:6379/0", "acquire": {"k": 2}})
    {'store': 'redis://:***@h:6379/0', 'acquire.k': '2'}
    """
    params: dict[str, str] = {}
    for key, value in values.items():
        name = prefix + key
        if isinstance(value, dict):
            params |= flat_params(value, f"{name}.")
        elif name in SECRET_KEYS and isinstance(value, str):
            params[name] = mask_password(value)
        else:
            params[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return params


def numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of an event's data as metric names and values.

    >>> numbers({"accuracy": 0.5, "version": "v1", "n_dev": 8, "mean_risk": None})
    {'dev_accuracy': 0.5, 'n_dev': 8.0}
    """
    return {
        prefix + RENAMED.get(key, key): float(value)
        for key, value in data.items()
        if key not in NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
    }


def cycle_metrics(events: Iterable[Event], samples_per_prompt: int) -> dict[str, float]:
    """A cycle's metrics: the dev evaluation's numbers, training's, seconds per node
    (summed when a node ran twice), samples and tokens per second of sampling, and the
    test split's (prefixed by role) at the end."""
    metrics: dict[str, float] = {}
    for event in events:
        record = payload(event)
        if isinstance(record, TestScores):
            metrics |= numbers(record.model_dump(), f"{record.role}_")
        elif isinstance(record, CycleMetrics):
            metrics |= numbers(record.model_dump())
        elif isinstance(record, NodeEnd):
            if event.node == "optimize":
                metrics |= numbers(record.summary)
            name = f"seconds_{event.node}"
            metrics[name] = metrics.get(name, 0.0) + record.seconds
    if metrics.get("sampling_seconds"):
        seconds = metrics["sampling_seconds"]
        metrics["samples_per_second"] = metrics["prompts_sampled"] * samples_per_prompt / seconds
        metrics["tokens_per_second"] = metrics["tokens_sampled"] / seconds
    return metrics


def training_runs(events: Iterable[Event]) -> list[list[dict[str, float]]]:
    """Per training run of the cycle that logged its optimizer steps (GRPO's health:
    reward and its spread, share of equal-reward groups, entropy, clip ratio, completion
    length, loss), its steps in order as `train/<name>` metrics with the run's step.

    >>> from graph.events import Emitter
    >>> sent = []
    >>> emit = Emitter(sent.append, "optimize", 1)
    >>> emit.end("v1", step_logs=[{"step": 1, "reward": 0.5, "loss": 0.1}])
    >>> training_runs([Event(session_id="s", **e) for e in sent])
    [[{'step': 1.0, 'train/reward': 0.5, 'train/loss': 0.1}]]
    """
    runs = []
    for event in events:
        record = payload(event)
        if event.node != "optimize" or not isinstance(record, NodeEnd):
            continue
        logged = record.summary.get("step_logs") or []
        if logged:
            runs.append(
                [
                    {"step": float(entry["step"])}
                    | {f"train/{k}": float(v) for k, v in entry.items() if k != "step"}
                    for entry in logged
                ]
            )
    return runs


def decision_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Each decision the monitor made: cycle, action, reason, evidence, promoted, source."""
    return [
        {
            "cycle": d.cycle,
            "action": d.action,
            "reason": d.reason,
            "evidence": json.dumps(d.evidence, sort_keys=True),
            "promoted": d.promote,
            "source": d.source,
        }
        for d in records_of(Decision, events)
    ]


def decision_tags(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One tag per decision (`decision.cycle-N`, then `.2` for a second in that cycle).

    >>> decision_tags([{"cycle": 1, "action": "loop", "reason": "gain"}])
    {'decision.cycle-1': 'loop: gain'}
    """
    tags: dict[str, str] = {}
    for row in rows:
        name = f"decision.cycle-{row['cycle']}"
        count = sum(1 for tag in tags if tag.startswith(name))
        tags[name + (f".{count + 1}" if count else "")] = f"{row['action']}: {row['reason']}"
    return tags


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _span_event(event: Event) -> tuple[str, int, dict[str, str]]:
    attributes = {"message": event.message, "key": event.key}
    if event.data:
        attributes["data"] = json.dumps(event.data, default=str, sort_keys=True)
    return event.kind, _ns(event.ts), attributes


def node_spans(events: list[Event]) -> list[SpanRecord]:
    """One span per node run: from its node_start, with every event of that node until
    the next node starts (a node records its planner's choice just after its node_end).
    A node with no node_end (the session stopped inside it) is not ok."""
    runs: list[list[Event]] = []
    for event in events:
        if not runs or event.kind == "node_start" or event.node != runs[-1][0].node:
            runs.append([])
        runs[-1].append(event)
    return [_span(run) for run in runs]


def _span(events: list[Event]) -> SpanRecord:
    first = events[0]
    end = next((e for e in events if e.kind == "node_end"), None)
    decision = next(iter(records_of(Decision, events)), None)
    outputs: dict[str, Any] = {"message": end.message, **end.data} if end else {}
    if decision is not None:
        outputs["decision"] = decision.model_dump(include={"action", "reason", "evidence"})
    return SpanRecord(
        name=str(first.node),
        start_ns=_ns(first.ts),
        end_ns=_ns(max(e.ts for e in events)),
        inputs={"cycle": first.cycle, "node": first.node, "message": first.message},
        outputs=outputs,
        events=[_span_event(e) for e in events if e.kind not in ("node_start", "node_end")],
        ok=end is not None,
    )


def cycle_trace(key: str, events: list[Event], session_id: str) -> TraceRecord:
    """A cycle's trace: a root span over its node spans, lean inputs and outputs (ids,
    counts, metrics, the decision)."""
    children = node_spans(events)
    decisions = decision_rows(events)
    evaluated = records_of(CycleMetrics, events)
    outputs: dict[str, Any] = {"nodes": [span.name for span in children]}
    if evaluated:
        outputs["version"] = evaluated[-1].version
        outputs["dev_accuracy"] = evaluated[-1].accuracy
    if decisions:
        outputs["decision"] = {k: decisions[-1][k] for k in ("action", "reason")}
    ended = records_of(SessionEnd, events)
    if ended:
        outputs["stop_reason"] = ended[0].stop_reason
    cycle = events[0].cycle or 0
    root = SpanRecord(
        name=key.replace("-", " "),
        start_ns=_ns(events[0].ts),
        end_ns=_ns(events[-1].ts),
        inputs={"cycle": cycle, "session_id": session_id, "events": len(events)},
        outputs=outputs,
    )
    tags = {"autodidact.session_id": session_id, "autodidact.cycle": str(cycle)}
    return TraceRecord(key=key, root=root, children=children, tags=tags)


SAMPLE_COLUMNS = ["item_id", "prompt", "selected_for_training", "verdict", "risk", "answer"]


def sample_rows(samples: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per sample (`report_data.cycle_samples`): the verdict select saved, the
    prompt's risk, and whether it was trained on.

    >>> sample_rows([{"item_id": "a", "prompt": "1+1?", "selected": True, "correct": True,
    ...     "finish_reason": "stop", "risk": 0.2, "text": "2"}])
    [['a', '1+1?', True, 'right', 0.2, '2']]
    """
    return [
        [s["item_id"], s["prompt"], s["selected"], sample_verdict(s), s["risk"], s["text"]]
        for s in samples
    ]


def sample_verdict(sample: dict[str, Any]) -> str:
    """A sample's verdict in the table: an answer cut at the token budget, never right,
    is `cut off` rather than wrong.

    >>> [sample_verdict({"correct": c, "finish_reason": f}) for c, f in
    ...     [(True, "stop"), (False, "stop"), (False, "length"), (None, "stop")]]
    ['right', 'wrong', 'cut off', 'not labelled']
    """
    if sample["correct"] is None:
        return "not labelled"
    if sample["correct"]:
        return "right"
    return "cut off" if sample["finish_reason"] != "stop" else "wrong"


def selection_tables(folder: Path, cycle: int) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """The cycle's samples and training examples as tables (none before select ran)."""
    attempts_name, sft_name = SessionLayout.attempts_name(cycle), SessionLayout.sft_name(cycle)
    manifest = ArtifactStore(folder).manifest()
    if manifest.find(attempts_name) is None or manifest.find(sft_name) is None:
        return {}
    sft = read_jsonl(folder / sft_name)
    training = [[r["item_id"], r["prompt"], r["completion"], r["risk"]] for r in sft]
    return {
        f"tables/cycle-{cycle}-samples.json": (
            SAMPLE_COLUMNS,
            sample_rows(cycle_samples(folder, cycle)),
        ),
        f"tables/cycle-{cycle}-training.json": (
            ["item_id", "prompt", "completion", "risk"],
            training,
        ),
    }


def version_references(folder: Path) -> dict[str, str]:
    """Each trained version's adapter folder (a reference: never a copy of the weights)."""
    return {
        f"version.{adapter.parent.name}": str(adapter.resolve())
        for adapter in sorted(folder.glob(SessionLayout.ADAPTERS_GLOB))
    }


def summary_markdown(decisions: list[dict[str, Any]], stop_reason: str | None) -> str:
    """The run's description: why the session stopped, every decision, where the
    samples are.

    >>> print(summary_markdown([{"cycle": 1, "action": "stop", "reason": "done"}], "done"))
    **Stopped:** done
    <BLANKLINE>
    | cycle | decision | reason |
    |---|---|---|
    | 1 | stop | done |
    <BLANKLINE>
    Samples of each cycle, with their verdicts and whether they were selected for training: `tables/cycle-N-samples.json` (Artifacts).
    """
    lines = [f"**Stopped:** {stop_reason}" if stop_reason else "**Running**", ""]
    lines += ["| cycle | decision | reason |", "|---|---|---|"]
    lines += [f"| {d['cycle']} | {d['action']} | {d['reason']} |" for d in decisions]
    lines += [
        "",
        "Samples of each cycle, with their verdicts and whether they were selected for "
        "training: `tables/cycle-N-samples.json` (Artifacts).",
    ]
    return "\n".join(lines)


PLOTTED = ("accuracy", "hallucination_rate", "abstention_rate", "mean_risk")


def plot_cycles(evaluations: list[CycleMetrics], png: Path) -> Path:
    """Dev accuracy, hallucination and abstention rates and mean risk per cycle."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    cycles = [metrics.cycle for metrics in evaluations]
    for name in PLOTTED:
        values = [getattr(metrics, name) for metrics in evaluations]
        if any(v is not None for v in values):
            axis.plot(cycles, [float("nan") if v is None else v for v in values], "o-", label=name)
    axis.set_xlabel("cycle")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


@dataclass
class SessionTracker:
    """An event consumer that writes the session to its MLflow run, cycle by cycle.
    `seconds` is the time spent in it; a tracking failure is kept in `error`, logged
    once, and turns tracking off: it never stops the session."""

    run: TrackedRun
    session_id: str
    folder: Path
    samples_per_prompt: int
    pending: dict[str, list[Event]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[CycleMetrics] = field(default_factory=list)  # dev metrics, in order
    stop_reason: str | None = None
    seconds: float = 0.0
    error: Exception | None = None
    training_steps_logged: int = 0  # optimizer steps so far: the next run's steps follow on
    registered_name: str | None = None  # the registry's model name (None: task + base model)

    def __call__(self, event: Event) -> None:
        with self._guarded():
            self._take(event)

    def catch_up(self, logged: list[Event], traced: set[str]) -> None:
        """A resumed session: the logged events of cycles its run has no trace of yet are
        taken as if they had just arrived (earlier decisions rebuild the table)."""
        with self._guarded():
            for event in logged:
                if trace_key(event) in traced:
                    self.seen.add(event.key)
                    self.decisions += decision_rows([event])
                    self.evaluations += records_of(CycleMetrics, [event])
                else:
                    self._take(event)

    def close(self) -> None:
        """Write what is pending; the run ends FINISHED once the session finished, else
        KILLED (a resume sets it running again)."""
        with self._guarded():
            if self.stop_reason is not None:
                for key in list(self.pending):
                    self._flush(key)
                self._log_closing_files()
                self._register()
            self.run.set_status("FINISHED" if self.stop_reason is not None else "KILLED")

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        if self.error is not None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            self.error = error
            log.warning("MLflow tracking stopped: %s", error)
        finally:
            self.seconds += time.perf_counter() - started

    def _take(self, event: Event) -> None:
        if event.kind == "progress" or event.key in self.seen:
            return
        self.seen.add(event.key)
        key = trace_key(event)
        for done in [k for k in self.pending if k != key]:
            self._flush(done)
        self.pending.setdefault(key, []).append(event)
        for ended in records_of(SessionEnd, [event]):
            self.stop_reason = ended.stop_reason

    def _flush(self, key: str) -> None:
        events = self.pending.pop(key)
        cycle = events[0].cycle or 0
        metrics = cycle_metrics(events, self.samples_per_prompt)
        if metrics:
            self.run.log_metrics(metrics, step=cycle, timestamp_ms=int(events[-1].ts * 1000))
        self._log_training_steps(events)
        self.decisions += decision_rows(events)
        self.evaluations += records_of(CycleMetrics, events)
        tags = decision_tags(self.decisions) | version_references(self.folder)
        if self.stop_reason is not None:
            tags["stop_reason"] = self.stop_reason
        tags["mlflow.note.content"] = summary_markdown(self.decisions, self.stop_reason)
        self.run.set_tags(tags)
        if self.decisions:
            columns = list(self.decisions[0])
            self.run.write_table(
                "tables/decisions.json", columns, [list(d.values()) for d in self.decisions]
            )
        if any(e.node == "select" and e.kind == "node_end" for e in events):
            tables = selection_tables(self.folder, cycle)
            for path, (columns, rows) in tables.items():
                self.run.write_table(path, columns, rows)
        self.run.write_trace(cycle_trace(key, events, self.session_id))

    def _log_training_steps(self, events: list[Event]) -> None:
        """Online RL's per-step health as step metrics (`train/...`), the steps of every
        run in the session (a retrain's too) one after another."""
        for run in training_runs(events):
            for entry in run:
                step = self.training_steps_logged + int(entry["step"])
                values = {k: v for k, v in entry.items() if k != "step"}
                self.run.log_metrics(values, step=step, timestamp_ms=int(events[-1].ts * 1000))
            self.training_steps_logged += int(max(entry["step"] for entry in run))

    def _register(self) -> None:
        """The session's initial and best versions in the model registry (aliases
        `initial` and `best`), the best with its gate; their registry versions as tags."""
        layout = SessionLayout(self.folder)
        if not layout.model_json.is_file():
            return
        record = json.loads(layout.model_json.read_text())
        if record.get("probe"):
            record["probe_path"] = str((self.folder / record["probe"]).resolve())
        name = registered_name(record, self.registered_name)
        aliases = register_session(
            self.run.client, record, run_id=self.run.run_id, session_id=self.session_id, name=name
        )
        self.run.set_tags(
            {"registered_model": name} | {f"registered.{a}": v for a, v in aliases.items()}
        )

    def _log_closing_files(self) -> None:
        """The report and any plots the session wrote, beside a plot of its metrics."""
        layout = SessionLayout(self.folder)
        for report in (layout.report_json, layout.report_html):
            if report.is_file():
                self.run.log_file(report)
        for png in sorted(self.folder.rglob("*.png")):
            self.run.log_file(png, "plots")
        if self.evaluations:
            with tempfile.TemporaryDirectory() as scratch:
                self.run.log_file(
                    plot_cycles(self.evaluations, Path(scratch) / "cycles.png"), "plots"
                )


@contextlib.contextmanager
def tracked(
    session: Session, uri: str, artifact_root: Path | None, *, resume: bool
) -> Iterator[SessionTracker]:
    """The session's tracker on the store at `uri`, closed when the session ends: a
    resumed session continues its run from what its event log holds."""
    opening = time.perf_counter()
    run = open_run(uri, f"autodidact/{session.task.name}", session.session_id, artifact_root)
    if run.created:
        run.log_params(flat_params(session.policy.model_dump(mode="json")))
        run.set_tags(
            {
                "task": session.task.name,
                "model": session.engine.name,
                "session_folder": str(session.folder.resolve()),
            }
        )
    tracker = SessionTracker(
        run,
        session.session_id,
        session.folder,
        session.policy.acquire.samples_per_prompt,
        registered_name=session.policy.registered_name,
    )
    tracker.seconds += time.perf_counter() - opening
    if resume:
        tracker.catch_up(session.store.events.read(session.session_id), run.traced_keys())
    try:
        yield tracker
    finally:
        tracker.close()
