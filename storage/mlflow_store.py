"""MLflow as the session's tracking store: one run per session (an experiment per task),
params, per-cycle metrics, tables, files, and traces written whole with their recorded
times. MLflow is an optional extra, imported only when tracking is opened; without it
`TrackingUnavailable` says how to install it.

Nothing leaves the machine unless the tracking URI points elsewhere: the client's
telemetry is off (`MLFLOW_DISABLE_TELEMETRY=true`) unless the user set that variable."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install -e '.[tracking]' (or `make run`, which installs it)"
SESSION_TAG = "autodidact.session_id"
TRACE_KEY_TAG = "autodidact.trace_key"
LOGGED_TABLES_TAG = "mlflow.loggedArtifacts"  # what MLflow's own log_table records


class TrackingUnavailable(RuntimeError):
    """MLflow is not installed."""


def mlflow_module() -> Any:
    """`mlflow`, imported with telemetry off and traces exported synchronously (unless
    the user set either), its INFO lines (database migrations) quiet."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # a trace is written whole at once: synchronous export stores it before returning,
    # and measured 0.4 s a trace against 1.5 s through the async queue's flush
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    try:
        import mlflow
    except ImportError:
        raise TrackingUnavailable(f"MLflow is not installed: {INSTALL_HINT}") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def tracking_available() -> bool:
    """Whether MLflow can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def default_tracking_uri(root: Path) -> str:
    """The project's tracking store: a SQLite file under `root`.

    >>> default_tracking_uri(Path("/tmp/runs"))
    'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def default_artifact_root(root: Path) -> Path:
    """Where the project's runs keep their artifacts: beside the store, never `./mlruns`."""
    return Path(root).resolve() / "mlartifacts"


def artifact_root_for(uri: str) -> Path | None:
    """Where new experiments keep artifacts: beside a local SQLite store (never `./mlruns`
    of the current folder); a server's own default for any other store.

    >>> artifact_root_for("sqlite:////tmp/runs/mlflow.db")
    PosixPath('/tmp/runs/mlartifacts')
    >>> artifact_root_for("http://mlflow.internal:5000") is None
    True
    """
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return None


def tracking_uri_for(root: Path, explicit: str | None, environ: dict[str, str]) -> str:
    """`explicit` (a flag or the policy), else `MLFLOW_TRACKING_URI`, else the store
    under `root`.

    >>> tracking_uri_for(Path("/r"), None, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    'http://mlflow:5000'
    >>> tracking_uri_for(Path("/r"), None, {})
    'sqlite:////r/mlflow.db'
    """
    return explicit or environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)


@dataclass(frozen=True)
class SpanRecord:
    """A span as recorded: its times (ns since the epoch), lean inputs and outputs, the
    events inside it as (name, time ns, attributes)."""

    name: str
    start_ns: int
    end_ns: int
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    ok: bool = True


@dataclass(frozen=True)
class TraceRecord:
    """A finished trace: a root span and its children, one level deep."""

    key: str  # unique per run: a trace is written once per key
    root: SpanRecord
    children: list[SpanRecord]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrackedRun:
    """One MLflow run on one tracking store."""

    client: Any
    run_id: str
    experiment_id: str
    created: bool = False  # a new run (not one a resumed session continues)

    def log_params(self, params: dict[str, str]) -> None:
        mlflow = mlflow_module()
        items = [mlflow.entities.Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # the store takes 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int) -> None:
        mlflow = mlflow_module()
        rows = [mlflow.entities.Metric(k, v, timestamp_ms, step) for k, v in metrics.items()]
        for start in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[start : start + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow = mlflow_module()
        rows = [mlflow.entities.RunTag(k, v[:8000]) for k, v in tags.items()]
        for start in range(0, len(rows), 100):
            self.client.log_batch(self.run_id, tags=rows[start : start + 100])

    def write_table(self, path: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table artifact in the layout of MLflow's `log_table`, replaced (not appended
        to, as `log_table` does) so writing it again after a resume keeps one copy."""
        self.client.log_dict(self.run_id, {"columns": columns, "data": rows}, path)
        tags = self.client.get_run(self.run_id).data.tags
        logged = json.loads(tags.get(LOGGED_TABLES_TAG, "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in logged:
            self.client.set_tag(self.run_id, LOGGED_TABLES_TAG, json.dumps([*logged, entry]))

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def traced_keys(self) -> set[str]:
        """The trace keys this run already has (a resumed session does not write them again)."""
        traces = self.client.search_traces(
            locations=[self.experiment_id], run_id=self.run_id, include_spans=False
        )
        return {t.info.tags.get(TRACE_KEY_TAG, "") for t in traces}

    def write_trace(self, trace: TraceRecord) -> None:
        """The trace written whole, with its recorded times, and flushed to the store."""
        mlflow, root = mlflow_module(), trace.root
        top = self.client.start_trace(
            root.name,
            inputs=root.inputs,
            tags={**trace.tags, TRACE_KEY_TAG: trace.key},
            experiment_id=self.experiment_id,
            start_time_ns=root.start_ns,
            run_id=self.run_id,
        )
        for child in trace.children:
            span = self.client.start_span(
                child.name,
                trace_id=top.trace_id,
                parent_id=top.span_id,
                inputs=child.inputs,
                start_time_ns=child.start_ns,
            )
            for name, at_ns, attributes in child.events:
                span.add_event(mlflow.entities.SpanEvent(name, at_ns, attributes))
            status = "OK" if child.ok else "ERROR"
            self.client.end_span(
                top.trace_id,
                span.span_id,
                outputs=child.outputs,
                status=status,
                end_time_ns=child.end_ns,
            )
        self.client.end_trace(top.trace_id, outputs=root.outputs, end_time_ns=root.end_ns)
        mlflow.flush_trace_async_logging()

    def set_status(self, status: str) -> None:
        """RUNNING, FINISHED, KILLED or FAILED."""
        self.client.update_run(self.run_id, status=status)


def open_run(uri: str, experiment: str, session_id: str, artifact_root: Path | None) -> TrackedRun:
    """The session's run on the store at `uri`: found by its session tag (a resumed
    session continues its run), else created. A new experiment keeps its artifacts
    under `artifact_root` (None: the server's own default, for a remote store)."""
    mlflow = mlflow_module()
    mlflow.set_tracking_uri(uri)  # traces are exported to the global tracking URI
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = (
            (artifact_root / experiment.replace("/", "-")).as_uri() if artifact_root else None
        )
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SESSION_TAG}` = '{session_id}'", max_results=1
    )
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(
            experiment_id, run_name=session_id, tags={SESSION_TAG: session_id}
        ).info.run_id
    return TrackedRun(client, run_id, experiment_id, created=not runs)
