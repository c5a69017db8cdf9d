"""A tiny session tracked to a temporary MLflow store, read back with MlflowClient: the
policy as params, metrics per cycle, decisions, tables and one trace per cycle with a
span per node, each finished cycle readable while the next one runs; and `autodidact ui`
serving that store to a real browser."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow", reason="tracking extra not installed: pip install -e '.[tracking]'")

from mlflow import MlflowClient

from agents.records import CycleMetrics
from graph.events import NodeEnd, NodeStart, Payload, envelope
from graph.session import Session
from storage import Event, open_store
from storage.mlflow_store import default_artifact_root, default_tracking_uri
from tests.browser_support import chromium_or_skip, screenshot_folder
from tests.session_support import coin_flip_task, tiny_policy
from tests.tiny_models import tiny_engine
from views.mlflow_logging import SessionTracker, tracked

NODES = {"acquire", "select", "refit_probe_on_samples", "optimize", "evaluate", "monitor"}


@dataclass
class Tracked:
    root: Path
    uri: str
    session_id: str
    state: dict[str, Any]
    tracker: SessionTracker
    # at each node start of a cycle >= 1: the trace keys the store held at that moment
    traces_seen: dict[tuple[int, str], set[str]] = field(default_factory=dict)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def run(self) -> Any:
        (run,) = self.client.search_runs(
            [e.experiment_id for e in self.client.search_experiments()],
            filter_string=f"tags.`autodidact.session_id` = '{self.session_id}'",
        )
        return run


def trace_keys(uri: str) -> set[str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    traces = client.search_traces(locations=experiments, include_spans=False)
    return {t.info.tags.get("autodidact.trace_key", "") for t in traces}


@pytest.fixture(scope="module")
def tracked_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    """One tiny two-cycle session, tracked; shared by the tracking and browser tests."""
    from engines.hf import HFEngine

    root = tmp_path_factory.mktemp("tracked")
    uri = default_tracking_uri(root)
    seen: dict[tuple[int, str], set[str]] = {}

    def look(event: Event) -> None:
        if event.kind == "node_start" and (event.cycle or 0) >= 1:
            seen[(event.cycle or 0, str(event.node))] = trace_keys(uri)

    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        session = Session(
            "tracked",
            tiny_policy(),
            store,
            coin_flip_task(),
            tiny_engine(),
            load_engine=lambda p: HFEngine.load(str(p)),
        )
        with tracked(session, uri, default_artifact_root(root), resume=False) as tracker:

            def both(event: Event) -> None:
                tracker(event)
                look(event)

            state = session.run(on_event=both)
    yield Tracked(root, uri, "tracked", dict(state), tracker, seen)


def test_the_session_is_one_run_with_params_metrics_and_decisions(tracked_session) -> None:  # type: ignore[no-untyped-def]
    t = tracked_session
    assert t.tracker.error is None
    run = t.run()
    assert run.info.status == "FINISHED"
    assert run.data.params["acquire.prompts_per_cycle"] == "8"
    assert run.data.params["monitor.max_cycles"] == "2"
    client = t.client
    cycles = [h.cycle for h in t.state["history"]]
    assert cycles == [0, 1, 2], "the tiny policy runs two cycles after the baseline"
    accuracy = client.get_metric_history(run.info.run_id, "dev_accuracy")
    assert sorted(m.step for m in accuracy) == cycles
    assert [m.value for m in sorted(accuracy, key=lambda m: m.step)] == [
        h.accuracy for h in t.state["history"]
    ]
    for name in ("hallucination_rate", "mean_risk", "train_loss", "seconds_optimize"):
        steps = {m.step for m in client.get_metric_history(run.info.run_id, name)}
        assert {1, 2} <= steps, name
    assert {m.step for m in client.get_metric_history(run.info.run_id, "samples_per_second")} == {
        1,
        2,
    }
    decisions = t.state["decisions"]
    for decision in decisions:
        tag = run.data.tags[f"decision.cycle-{decision.cycle}"]
        assert tag == f"{decision.action}: {decision.reason}"
    assert run.data.tags["stop_reason"] == t.state["final"]["stop_reason"]
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "tables/decisions.json")).read_text()
    )
    assert [row[1] for row in table["data"]] == [d.action for d in decisions]
    assert run.data.tags["version.v1"].endswith("sessions/tracked/versions/v1/adapter")


def test_samples_tables_say_which_samples_were_trained_on(tracked_session) -> None:  # type: ignore[no-untyped-def]
    t = tracked_session
    run_id = t.run().info.run_id
    path = t.client.download_artifacts(run_id, "tables/cycle-1-samples.json")
    table = json.loads(Path(path).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert len(rows) == 8 * 2, "8 prompts x 2 samples"
    sft = [
        json.loads(line)
        for line in (t.root / "sessions/tracked/cycle-1/sft.jsonl").read_text().splitlines()
    ]
    selected = {(r["item_id"], r["answer"]) for r in rows if r["selected_for_training"]}
    assert selected == {(e["item_id"], e["completion"]) for e in sft} and selected
    assert all(r["verdict"] == "right" for r in rows if r["selected_for_training"])
    assert {r["verdict"] for r in rows} <= {"right", "wrong", "cut off"}
    saved = (t.root / "sessions/tracked/cycle-1/verdicts.jsonl").read_text().splitlines()
    verdicts = [right for line in saved for right in json.loads(line)["correct"]]
    assert [r["verdict"] == "right" for r in rows] == verdicts, "the verdicts select saved"


def test_one_trace_per_cycle_with_a_span_per_node(tracked_session) -> None:  # type: ignore[no-untyped-def]
    t = tracked_session
    client, run = t.client, t.run()
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
    by_key = {tr.info.tags["autodidact.trace_key"]: tr for tr in traces}
    assert set(by_key) == {"cycle-0", "cycle-1", "cycle-2", "finalize"}
    assert len(traces) == 4, "each trace written once"
    cycle_1 = by_key["cycle-1"]
    children = [s for s in cycle_1.data.spans if s.parent_id is not None]
    assert {s.name for s in children} >= NODES
    monitor = next(s for s in children if s.name == "monitor")
    assert monitor.outputs["decision"]["action"] == t.state["decisions"][0].action
    decision_events = [e for e in monitor.events if e.name == "decision"]
    assert len(decision_events) == 1 and t.state["decisions"][0].reason in str(
        decision_events[0].attributes["message"]
    )
    for span in children:
        assert span.start_time_ns <= span.end_time_ns
        assert "seconds" in span.outputs
    size = sum(len(json.dumps(s.to_dict())) for s in cycle_1.data.spans)
    assert size < 100_000, "lean spans: ids, counts, metrics, the decision, not the state"
    assert {s.name for s in by_key["cycle-0"].data.spans} >= {"fit_probe_on_answers", "baseline"}


def test_a_finished_cycle_is_readable_while_the_next_one_runs(tracked_session) -> None:  # type: ignore[no-untyped-def]
    seen = tracked_session.traces_seen
    assert "cycle-1" in seen[(2, "evaluate")], "read during cycle 2, before its evaluation"
    assert "cycle-1" not in seen[(1, "monitor")], "a cycle is written once it has ended"
    assert "cycle-0" in seen[(1, "acquire")]


def test_resume_continues_the_same_run_and_writes_missing_cycles(
    tracked_session, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The tracker of a resumed session takes the event log's cycles its run lacks (on
    the module's store: creating an MLflow database takes minutes on a loaded machine)."""
    from storage.mlflow_store import open_run

    uri, root = tracked_session.uri, tracked_session.root
    run = open_run(uri, "autodidact/t", "s1", default_artifact_root(root))
    again = open_run(uri, "autodidact/t", "s1", default_artifact_root(root))
    assert again.run_id == run.run_id and run.created and not again.created

    def event(key: str, node: str, cycle: int, record: Payload) -> Event:
        kind, data_type, data = envelope(record)
        return Event(
            session_id="s1",
            key=key,
            ts=time.time(),
            kind=kind,
            node=node,
            cycle=cycle,
            data_type=data_type,
            data=data,
        )

    v0 = CycleMetrics(cycle=0, version="v0", accuracy=0.25, hallucination_rate=0.75)
    logged = [
        event("c0/baseline/0", "baseline", 0, NodeStart()),
        event("c0/baseline/1", "baseline", 0, v0),
        event("c0/baseline/2", "baseline", 0, NodeEnd(seconds=1.0)),
        event("c1/acquire/0", "acquire", 1, NodeStart()),
    ]
    tracker = SessionTracker(run, "s1", tmp_path, 2)
    tracker.catch_up(logged, run.traced_keys())
    assert tracker.error is None and run.traced_keys() == {"cycle-0"}
    tracker(logged[-1])  # re-emitted by the node that runs again: kept once
    assert [e.key for e in tracker.pending["cycle-1"]] == ["c1/acquire/0"]
    later = SessionTracker(run, "s1", tmp_path, 2)
    later.catch_up(logged, run.traced_keys())
    assert run.traced_keys() == {"cycle-0"}, "a cycle already traced is not written again"
    history = MlflowClient(uri).get_metric_history(run.run_id, "dev_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.25)]


# ------------------------------------------------------------------------------- browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui_server(tracked_session) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`autodidact ui` on the tracked session's store, until the module's tests end."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "ui",
            "--root",
            str(tracked_session.root),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=(tracked_session.root / "ui-server.log").open("w"),
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    assert server.stdout is not None
    first = server.stdout.readline()  # the URL, printed once the server answers
    assert first.startswith(f"MLflow UI: {url}"), first
    try:
        yield url
    finally:
        server.send_signal(2)  # Ctrl-C
        try:
            assert server.wait(timeout=60) == 0
        finally:
            server.kill()


@pytest.mark.browser
def test_the_browser_shows_the_run_its_charts_traces_and_samples(
    tracked_session, ui_server, tmp_path_factory: pytest.TempPathFactory
) -> None:  # type: ignore[no-untyped-def]
    browser_path = chromium_or_skip()
    playwright = pytest.importorskip("playwright.sync_api")
    t, run = tracked_session, tracked_session.run()
    shots = screenshot_folder()
    base = f"{ui_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(base)
        page.get_by_text(t.state["final"]["stop_reason"]).first.wait_for()
        for decision in t.state["decisions"]:  # the description's table: cycle, action, reason
            row = page.locator("tr", has_text=decision.reason).first
            row.wait_for()
            assert decision.action in row.inner_text()
        page.screenshot(path=str(shots / "run-overview.png"), full_page=True)

        page.goto(f"{base}/model-metrics")
        page.get_by_text("dev_accuracy").first.wait_for()
        page.locator("canvas, svg.main-svg").first.wait_for()
        page.screenshot(path=str(shots / "run-metrics.png"), full_page=True)

        page.goto(f"{base}/artifacts/tables/cycle-1-samples.json")
        page.get_by_text("selected_for_training").first.wait_for()
        shown = page.locator("body").inner_text()
        sft = (t.root / "sessions/tracked/cycle-1/sft.jsonl").read_text().splitlines()
        trained = {json.loads(line)["item_id"] for line in sft}
        assert trained and all(item in shown for item in trained) and "true" in shown
        page.screenshot(path=str(shots / "run-samples.png"), full_page=True)

        page.goto(f"{base}/traces")
        page.get_by_text('"cycle": 1,').first.click()  # the trace's request: its inputs
        for node in ("acquire", "select", "optimize", "monitor"):
            page.get_by_text(node, exact=True).first.wait_for()
        page.screenshot(path=str(shots / "run-trace.png"), full_page=True)
        browser.close()


def test_ui_refuses_a_port_in_use_and_a_root_without_a_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import make_app

    runner, app = CliRunner(), make_app()
    result = runner.invoke(app, ["ui", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "no tracked sessions under" in result.output
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["ui", "--root", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_run_through_the_cli_tracks_to_the_store_under_root(
    tracked_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`autodidact run` (tiny stand-ins) logs to ROOT/mlflow.db: the module's store, whose
    database already exists."""
    from typer.testing import CliRunner

    from cli.app import make_app
    from graph.policy import dump_policy
    from tests.session_worker import stand_in_loaders

    monkeypatch.delenv("AUTODIDACT_TRACKING", raising=False)
    policy = tmp_path / "tiny.yaml"
    policy.write_text(dump_policy(tiny_policy()))
    root = tracked_session.root
    args = ["run", "--policy", str(policy), "--session-id", "cli", "--root", str(root)]
    result = CliRunner().invoke(make_app(stand_in_loaders()), args)
    assert result.exit_code == 0, result.output
    assert f"tracking: {tracked_session.uri}" in result.output
    client = MlflowClient(tracked_session.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, "tags.`autodidact.session_id` = 'cli'")
    assert run.info.status == "FINISHED" and run.data.params["monitor.max_cycles"] == "2"
    assert (root / "sessions/cli/report.html").is_file(), "the CLI writes the finished page"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html"} <= logged, "written before the tracker closed"
    traces = client.search_traces(locations=experiments, run_id=run.info.run_id)
    assert {t.info.tags["autodidact.trace_key"] for t in traces} == {
        "cycle-0",
        "cycle-1",
        "cycle-2",
        "finalize",
    }


def test_training_steps_are_step_metrics_one_run_after_another(tmp_path: Path) -> None:
    """GRPO's per-step health goes to MLflow as `train/...` metrics; a second run's steps
    (the next cycle's, or a retrain's) follow the first's."""
    from graph.events import Emitter
    from views.mlflow_logging import SessionTracker

    logged: list[tuple[dict[str, float], int]] = []

    class Run:
        def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int) -> None:
            logged.append((metrics, step))

        def set_tags(self, tags: dict[str, str]) -> None: ...
        def write_table(self, *args: object) -> None: ...
        def write_trace(self, *args: object) -> None: ...

    sent: list[dict[str, object]] = []
    for cycle in (1, 2):
        emit = Emitter(sent.append, "optimize", cycle)
        steps = [{"step": s, "reward": 0.1 * s + cycle, "entropy": 0.5} for s in (1, 2)]
        emit.end(f"v{cycle}", steps=2, step_logs=steps)
    tracker = SessionTracker(Run(), "s", tmp_path, 2)  # type: ignore[arg-type]
    for raw in sent:
        tracker(Event(session_id="s", **raw))  # type: ignore[arg-type]
    tracker._flush(next(iter(tracker.pending)))
    rewards = [(m["train/reward"], step) for m, step in logged if "train/reward" in m]
    assert [step for _, step in rewards] == [1, 2, 3, 4]
    assert [round(r, 2) for r, _ in rewards] == [1.1, 1.2, 2.1, 2.2]
    assert tracker.error is None


def test_the_session_registers_its_initial_and_best_versions(tracked_session) -> None:  # type: ignore[no-untyped-def]
    """The model registry holds the session's initial and best versions by path, with
    the aliases `initial` and `best`, the gate and the lineage as tags; `models:/` names
    resolve to them."""
    from storage.registry import resolve

    t = tracked_session
    record = json.loads((t.root / "sessions/tracked/model.json").read_text())
    name = t.run().data.tags["registered_model"]
    assert name == f"arithmetic-{record['base_fingerprint'][:12]}"
    best = t.client.get_model_version_by_alias(name, "tracked-best")  # the session's own
    initial = t.client.get_model_version_by_alias(name, "tracked-initial")
    assert best.tags["autodidact.session"] == initial.tags["autodidact.session"] == "tracked"
    assert best.tags["autodidact.version"] == t.state["best_version"]
    assert best.source == str(record["path"] or record["model"])
    assert best.run_id == t.run().info.run_id
    found = resolve(f"models:/{name}@tracked-best", t.uri)
    assert found.source == best.source
    if record["probe"]:
        assert found.probe == (t.root / "sessions/tracked" / record["probe"]).resolve()
        assert found.thresholds == record["thresholds"]
    with pytest.raises(ValueError, match="is not in the model registry"):
        resolve(f"models:/{name}@nope", t.uri)


def test_eval_takes_a_registered_model_with_its_gate(tracked_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cli.app import make_app
    from cli.common import Loaders
    from engines.hf import HFEngine

    t = tracked_session
    name = t.run().data.tags["registered_model"]

    def load(model: str) -> Any:
        return HFEngine.load(model) if Path(model).is_dir() else tiny_engine()

    argv = ["eval", "--model", f"models:/{name}@tracked-best", "--root", str(t.root)]
    argv += [
        "--task",
        "arithmetic",
        "--limit",
        "3",
        "--max-new-tokens",
        "3",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(make_app(Loaders(load_engine=load)), argv)
    assert result.exit_code == 0, result.output
    (summary,) = tmp_path.glob("eval-*/summary.json")
    best = t.state["versions"][t.state["best_version"]]
    assert json.loads(summary.read_text())["fingerprint"] == best["fingerprint"]
    missing = CliRunner().invoke(
        make_app(Loaders(load_engine=load)),
        ["eval", "--model", f"models:/{name}@nope", "--root", str(t.root)],
    )
    assert missing.exit_code == 2 and "is not in the model registry" in missing.output
