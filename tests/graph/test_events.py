"""The event codec: every data type written and read back as the same record; a session
logged at schema version 1 (before events named their data type) still read by `trace`,
`report` and the tracker; a newer version refused in one line; no reader guessing an
event's kind from its data's keys."""

from __future__ import annotations

import ast
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.records import CycleMetrics, Decision, PlannedChoice
from cli.app import make_app
from graph.events import (
    DATA_TYPES,
    Emitter,
    Failure,
    NodeEnd,
    NodeStart,
    Note,
    Payload,
    ProbeSaved,
    Progress,
    SessionEnd,
    TestScores,
    envelope,
    payload,
    records_of,
)
from storage import Event, EventDataError, EventVersionError, SessionInfo, open_store
from storage.events import decode_event, encode_event
from storage.records import RENAMED_NODES
from views.mlflow_logging import cycle_metrics, cycle_trace, decision_rows
from views.report_data import collect_report

REPO = Path(__file__).resolve().parents[2]
SESSION_V1 = REPO / "tests" / "fixtures" / "session-v1.jsonl"  # a tiny session's log
runner = CliRunner()

EXAMPLES: list[Payload] = [
    NodeStart(),
    NodeEnd(seconds=1.5, steps=2, final_loss=0.64, train_seconds=1.2, examples=5),
    Progress(done=1, total=4),
    Progress(done=2, total=4, loss=None),
    Note(),
    Note(sft_artifact="cycle-1/sft.jsonl", sft=5, pairs=1, wasted_share=None),
    PlannedChoice(
        cycle=1, stage="acquire", final={"prompts": 8}, source="rules", reason="policy rules"
    ),
    CycleMetrics(cycle=1, version="v1", accuracy=0.5, hallucination_rate=0.25, probe_auroc=0.7),
    TestScores(
        role="final",
        version="v1",
        test_accuracy=0.5,
        test_hallucination_rate=0.25,
        test_abstention_rate=0.25,
        test_answered_precision=2 / 3,
        test_probe_aurc=None,
        test_truncated=1,
        n_test=8,
    ),
    Decision(cycle=1, action="loop", reason="v1 gained", evidence={"gain": 0.1, "version": "v1"}),
    ProbeSaved(name="probes/probe-0", feature="layer.0.query_token", val_auroc=0.5),
    Failure(),
    SessionEnd(
        initial={"version": "v0", "test_accuracy": 0.25},
        final={"version": "v1", "test_accuracy": 0.5},
        cycles=[{"cycle": 0, "version": "v0", "decision": None}],
        decisions=[{"cycle": 1, "action": "stop", "reason": "plateau"}],
        stop_reason="plateau",
        wall_seconds=12.5,
    ),
]


def written(record: Payload, node: str = "evaluate", cycle: int = 1) -> Event:
    """The event an `Emitter` writes for `record`, as the session hands it to the log."""
    out: list[dict[str, object]] = []
    Emitter(out.append, node, cycle)("a message", record)
    return Event.model_validate({"session_id": "s1", **out[0]})


def test_the_examples_cover_every_data_type() -> None:
    assert {envelope(record)[1] for record in EXAMPLES} == set(DATA_TYPES)


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: envelope(r)[1])
def test_each_record_is_read_back_as_written(record: Payload) -> None:
    event = written(record)
    kind, data_type, data = envelope(record)
    assert (event.schema_version, event.kind, event.data_type) == (3, kind, data_type)
    read = decode_event(encode_event(event), seq=1)
    assert read.data == data
    assert payload(read) == record and type(payload(read)) is type(record)


def test_progress_keeps_out_what_it_was_not_given() -> None:
    assert written(Progress(done=1, total=4)).data == {"done": 1, "total": 4}
    assert written(Progress(done=1, total=4, loss=0.5)).data["loss"] == 0.5


# ------------------------------------------------------------------------ version 1


def store_with_log(root: Path, bodies: list[str], session_id: str = "s1") -> None:
    """A store whose registry has `session_id` and whose log holds `bodies` as they are
    (the JSON lines an older autodidact wrote)."""
    url = f"sqlite:///{root}/autodidact.db"
    with open_store(url, root) as store:
        now = time.time()
        store.events.put_session(
            SessionInfo(
                session_id=session_id,
                status="finished",
                task="arithmetic",
                model="tiny",
                store_url=url,
                created_at=now,
                updated_at=now,
            )
        )
    with sqlite3.connect(root / "autodidact.db") as db:
        for seq, body in enumerate(bodies, start=1):
            fields = json.loads(body)
            db.execute(
                "INSERT INTO events (session_id, seq, key, ts, kind, body) VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, seq, fields["key"], fields["ts"], fields["kind"], body),
            )


@pytest.fixture()
def v1_events(tmp_path: Path) -> list[Event]:
    store_with_log(tmp_path, SESSION_V1.read_text().splitlines())
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        return store.events.read("s1")


def test_a_version_1_log_reads_as_the_records_it_held(v1_events: list[Event]) -> None:
    assert {(e.schema_version, e.data_type) for e in v1_events} == {(1, None)}
    types = Counter(envelope(payload(e))[1] for e in v1_events)
    assert types == {
        "node_start": 15,
        "node_end": 15,
        "probe_saved": 3,
        "dev_metrics": 3,
        "test_scores": 1,
        "decision": 2,
        "plan": 8,
        "note": 4,
        "session_end": 1,
    }
    for event in v1_events:  # each record writes again the data it was read from, plus
        kind, _, data = envelope(payload(event))  # only fields added since, at their defaults
        added = {key: data[key] for key in set(data) - set(event.data)}
        assert (kind, {key: data[key] for key in event.data}) == (event.kind, event.data)
        assert added == {key: ADDED_SINCE_V1[key] for key in added}, event.key


# record fields added after the fixture was written, and the default an old record reads as
ADDED_SINCE_V1 = {"mixed_share": None, "predicted_mixed_share": None}


def test_records_older_than_their_cycle_field_take_the_events() -> None:
    def v1(kind: str, node: str, data: dict[str, object]) -> Event:
        fields = {"schema_version": 1, "session_id": "s1", "key": "k", "ts": 0.0, "cycle": 2}
        return Event.model_validate(fields | {"kind": kind, "node": node, "data": data})

    decision = payload(
        v1(
            "decision",
            "monitor",
            {"schema_version": 1, "action": "stop", "reason": "plateau", "evidence": {}},
        )
    )
    plan = payload(
        v1(
            "action",
            "acquire",
            {"schema_version": 1, "stage": "acquire", "final": {}, "source": "rules", "reason": ""},
        )
    )
    metrics = payload(  # the metrics' first layout, before abstention and probe baselines
        v1(
            "metric",
            "evaluate",
            {"schema_version": 1, "cycle": 2, "version": "v2", "accuracy": 0.5}
            | {"hallucination_rate": 0.5, "n_dev": 8, "refine": "none", "seconds": 3.0},
        )
    )
    scores = payload(  # the test split's first layout: no abstention, precision or AURC
        v1(
            "metric",
            "finalize",
            {"role": "final", "version": "v2", "test_accuracy": 0.5}
            | {"test_hallucination_rate": 0.5, "test_truncated": 0, "n_test": 8},
        )
    )
    assert isinstance(decision, Decision) and decision.cycle == 2
    assert isinstance(plan, PlannedChoice) and plan.cycle == 2
    assert isinstance(metrics, CycleMetrics) and metrics.abstention_rate == 0.0
    assert isinstance(scores, TestScores) and scores.test_abstention_rate is None
    assert isinstance(payload(v1("error", "probe", {})), Failure)


def test_trace_and_report_read_a_version_1_session(tmp_path: Path) -> None:
    store_with_log(tmp_path, SESSION_V1.read_text().splitlines())
    app = make_app()
    trace = runner.invoke(app, ["trace", "s1", "--root", str(tmp_path)])
    assert trace.exit_code == 0, trace.output
    assert "v1: dev accuracy 50.0%" in trace.output and "(1.5 s)" in trace.output
    assert trace.output.count("evidence: abstention_rate=0, accuracy=0.500") == 2
    page = tmp_path / "page.html"
    report = runner.invoke(app, ["report", "s1", "--root", str(tmp_path), "--out", str(page)])
    assert report.exit_code == 0, report.output
    assert "no decision recorded" not in page.read_text()
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        events = store.events.read("s1")
        info = store.events.get_session("s1")
    collected = collect_report("s1", info, events, tmp_path / "sessions" / "s1")
    assert [(c["cycle"], c["version"]) for c in collected.cycles] == [
        (0, "v0"),
        (1, "v1"),
        (2, "v2"),
    ]
    assert [(d["cycle"], d["action"]) for d in collected.decisions] == [(1, "loop"), (2, "stop")]
    assert collected.stop_reason == "cycle budget spent (2 of 2 cycles)"


def test_a_version_1_session_resumed_logs_version_3_beside_it(tmp_path: Path) -> None:
    store_with_log(tmp_path, SESSION_V1.read_text().splitlines())
    later = written(Decision(cycle=3, action="stop", reason="resumed"), node="monitor", cycle=3)
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        store.events.append(later.model_copy(update={"key": "c3/monitor/1"}))
        events = store.events.read("s1")
    assert [e.schema_version for e in events[-2:]] == [1, 3]
    decisions = [(d.cycle, d.action) for d in records_of(Decision, events)]
    assert decisions == [(1, "loop"), (2, "stop"), (3, "stop")]


def test_events_before_version_3_read_with_the_renamed_nodes(tmp_path: Path) -> None:
    """The version-1 log names the probe fits `probe` and `refit`, as version 2 did: read
    back, they carry the graph's names now, in the node and the key; other nodes as written."""
    store_with_log(tmp_path, SESSION_V1.read_text().splitlines())
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        events = store.events.read("s1")
    nodes = {e.node for e in events}
    assert {"fit_probe_on_answers", "refit_probe_on_samples", "acquire"} <= nodes
    assert not nodes & set(RENAMED_NODES), "no old name left"
    assert events[0].key == "c0/fit_probe_on_answers/0"
    raw = [json.loads(line) for line in SESSION_V1.read_text().splitlines()]
    assert [e.key.split("/")[0] for e in events] == [r["key"].split("/")[0] for r in raw]
    v2 = decode_event(json.dumps(raw[0] | {"schema_version": 2, "data_type": "node_start"}), 1)
    assert (v2.node, v2.key) == ("fit_probe_on_answers", "c0/fit_probe_on_answers/0")
    v3 = decode_event(json.dumps(raw[0] | {"schema_version": 3, "data_type": "node_start"}), 1)
    assert v3.node == "probe", "a version-3 event is read as written"


def test_the_renamed_nodes_are_the_graphs() -> None:
    from graph.build import wire
    from graph.nodes import Nodes

    graph = wire(Nodes(None, None, None, None))  # type: ignore[arg-type]
    assert set(RENAMED_NODES.values()) <= set(graph.nodes)
    assert not set(RENAMED_NODES) & set(graph.nodes)


def test_the_tracker_reads_a_version_1_cycle(v1_events: list[Event]) -> None:
    cycle_1 = [e for e in v1_events if e.cycle == 1]
    metrics = cycle_metrics(cycle_1, samples_per_prompt=2)
    assert metrics["dev_accuracy"] == 0.5 and metrics["train_loss"] > 0
    assert metrics["seconds_optimize"] == 1.544 and metrics["tokens_per_second"] > 0
    assert [(r["cycle"], r["action"], r["promoted"]) for r in decision_rows(cycle_1)] == [
        (1, "loop", True)
    ]
    outputs = cycle_trace("cycle-1", cycle_1, "s1").root.outputs
    assert (outputs["version"], outputs["dev_accuracy"]) == ("v1", 0.5)
    final = [e for e in v1_events if e.node == "finalize"]
    assert cycle_metrics(final, 2)["initial_test_accuracy"] == 0.625
    assert (
        cycle_trace("finalize", final, "s1").root.outputs["stop_reason"].startswith("cycle budget")
    )


# --------------------------------------------------------------- what is refused


def test_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    newer = json.loads(SESSION_V1.read_text().splitlines()[0]) | {"schema_version": 4}
    with pytest.raises(EventVersionError, match="schema version 4, newer than"):
        decode_event(json.dumps(newer), seq=1)
    store_with_log(tmp_path, [json.dumps(newer)])
    app = make_app()
    for command in (["trace", "s1"], ["report", "s1"]):
        result = runner.invoke(app, [*command, "--root", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "event 'c0/probe/0' of session 's1' has schema version 4" in result.output


def test_a_newer_record_inside_an_event_is_refused_in_one_line() -> None:
    event = written(Decision(cycle=1, action="stop", reason="done"))
    newer = event.model_copy(update={"data": {**event.data, "schema_version": 9, "new": 1}})
    with pytest.raises(EventVersionError, match="holds a decision of schema version 9"):
        payload(newer)


def test_data_that_is_not_its_record_is_refused_in_one_line() -> None:
    wrong = written(CycleMetrics(cycle=1, version="v1", accuracy=0.5, hallucination_rate=0.5))
    wrong = wrong.model_copy(update={"data": {**wrong.data, "accuracy": 2.0}})
    with pytest.raises(EventDataError, match=r"not a valid dev_metrics \(accuracy: ") as error:
        payload(wrong)
    assert "\n" not in str(error.value)
    with pytest.raises(EventDataError, match="data type 'decision' is not one of 'metric'"):
        payload(wrong.model_copy(update={"data_type": "decision"}))
    with pytest.raises(EventDataError, match="data type None"):
        payload(wrong.model_copy(update={"data_type": None}))


# ---------------------------------------------------- no reader guesses from keys

READERS = ("graph", "cli", "benchmarks", "scripts")
CODEC = REPO / "graph" / "events.py"  # the one module that reads data as it was written


def key_guesses(source: str) -> list[int]:
    """Lines that test an event's data for a key (`"x" in e.data`, `e.data.get(...)`,
    `e.data["x"]`, or the same on a name bound to `e.data`).

    >>> key_guesses('data = e.data\\nif "version" in data: pass\\nx = e.data.get("a")')
    [2, 3]
    """
    tree = ast.parse(source)
    aliases = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_data(node.value, set())
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            tested = node.comparators
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            tested = [node.func.value] if node.func.attr == "get" else []
        elif isinstance(node, ast.Subscript):
            tested = [node.value]
        else:
            continue
        if any(_is_data(value, aliases) for value in tested):
            found.add(node.lineno)
    return sorted(found)


def _is_data(node: ast.expr, aliases: set[str]) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "data") or (
        isinstance(node, ast.Name) and node.id in aliases
    )


def test_no_reader_tells_an_event_kind_from_its_data_keys() -> None:
    guesses = {
        str(path.relative_to(REPO)): key_guesses(path.read_text())
        for package in READERS
        for path in sorted((REPO / package).rglob("*.py"))
        if path != CODEC
    }
    assert {path: lines for path, lines in guesses.items() if lines} == {}
