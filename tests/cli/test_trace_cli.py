"""`autodidact sessions` and `autodidact trace` on a real (tiny) session: followed live
while it runs in another process, then inspected once it has finished."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import make_app
from storage import Event, open_store
from tests.session_worker import REPO, TIMEOUT_S, launch

runner = CliRunner()
app = make_app()
NODES = (
    "fit_probe_on_answers",
    "baseline",
    "acquire",
    "select",
    "optimize",
    "evaluate",
    "monitor",
    "finalize",
)


@dataclass
class Traced:
    """A tiny session run in a worker while `trace --follow --json` printed it."""

    root: Path
    session: str
    logged: list[Event]
    lines: list[tuple[float, str]] = field(default_factory=list)  # (arrival time, line)
    follower_rc: int | None = None
    session_ended: float = 0.0
    follower_ended: float = 0.0


def wait_until_registered(root: Path, session: str, worker: object) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        while store.events.get_session(session) is None:
            assert worker.proc.poll() is None, worker.output()  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the session never registered"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Traced:
    root = tmp_path_factory.mktemp("traced")
    session = "traced"
    # slowed checkpoints stretch the session past the follower's own start-up
    worker = launch(f"sqlite:///{root}/autodidact.db", root, session, slow_checkpoints=0.2)
    wait_until_registered(root, session, worker)
    follower = subprocess.Popen(
        [sys.executable, "-m", "cli", "trace", session, "--follow", "--json", "--root", root],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    result = Traced(root, session, [])

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            result.lines.append((time.time(), line))

    reader = threading.Thread(target=read)
    reader.start()
    assert worker.wait() == 0, worker.output()
    result.session_ended = time.time()
    result.follower_rc = follower.wait(30)
    result.follower_ended = time.time()
    reader.join(10)
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        result.logged = store.events.read(session)
    assert result.follower_rc == 0, follower.stderr.read() if follower.stderr else ""
    return result


def invoke(traced: Traced, *args: str) -> str:
    result = runner.invoke(app, [*args, "--root", str(traced.root)])
    assert result.exit_code == 0, result.output
    return result.output


def test_follow_prints_a_running_session_live_and_ends_with_it(traced: Traced) -> None:
    followed = [Event.model_validate_json(line) for _, line in traced.lines]
    assert followed == traced.logged, "every logged event, once, in order"
    first_seen = traced.lines[0][0]
    assert first_seen < traced.session_ended, "events were printed while the session ran"
    live = [t for t, _ in traced.lines if t < traced.session_ended]
    assert len(live) > len(traced.lines) // 2
    assert traced.follower_ended - traced.session_ended < 10, "follow ends with the session"


def test_sessions_lists_the_finished_session(traced: Traced) -> None:
    table = invoke(traced, "sessions")
    rows = [line.split() for line in table.splitlines()]
    (row,) = [r for r in rows if r and r[0] == traced.session]
    assert row[1] == "finished" and row[-2] == "2" and row[-1].endswith("%"), table
    (info,) = [json.loads(line) for line in invoke(traced, "sessions", "--json").splitlines()]
    assert info["session_id"] == traced.session and info["status"] == "finished"
    assert info["cycles"] == 2 and info["best_accuracy"] is not None


def test_trace_shows_node_timeline_with_durations_and_decisions(traced: Traced) -> None:
    text = " ".join(invoke(traced, "trace", traced.session).split())  # rich may wrap lines
    for node in NODES:
        assert re.search(rf"c\d {node} node_end .*?\(\d+\.\d s\)", text), f"{node} has no duration"
    assert re.search(r"decision loop: \S.*? evidence: \w+=", text), "loop decision with reason"
    assert "decision stop: cycle budget spent (2 of 2 cycles)" in text


def test_trace_json_is_one_event_per_line(traced: Traced) -> None:
    lines = invoke(traced, "trace", traced.session, "--json").splitlines()
    assert [Event.model_validate_json(line) for line in lines] == traced.logged


def test_follow_on_a_finished_session_prints_it_and_returns(traced: Traced) -> None:
    lines = invoke(traced, "trace", traced.session, "--follow", "--json").splitlines()
    assert len(lines) == len(traced.logged)


def test_unknown_session_is_exit_2_one_line(traced: Traced) -> None:
    for args in (["trace", "nope"], ["trace", "nope", "--follow"]):
        result = runner.invoke(app, [*args, "--root", str(traced.root)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "no session 'nope'" in result.output
