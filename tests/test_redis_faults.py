"""Redis faults, against real redis-servers: unreachable at start, killed mid-session
(then restarted with its append-only file), two sessions sharing one server.

The mid-session test starts its own redis-server on a free port so it can kill and
restart it; the two-session test uses the shared test Redis (`redis_url`); the
unreachable one points at a port nothing listens on."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import Loaders
from storage import open_store
from tests.session_worker import Outcome, checkpoint_values, launch, outcome, wait_for_key
from tests.test_resume import assert_same_session

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own, persisted with an append-only file in `folder`
    so that what it acknowledged survives a kill -9 and a restart on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--appendonly", "yes", "--save", "", "--dir", str(self.folder)]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError(
            f"redis-server did not start: {(self.folder / 'redis.log').read_text()}"
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


def no_model(_model: str) -> NoReturn:
    raise AssertionError("no model may load before the store is open")


@pytest.mark.parametrize("command", ["run", "sessions", "trace"])
def test_unreachable_redis_at_start_is_one_line_naming_url_and_fix(
    command: str, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    args = {
        "run": ["run", "--preset", "quick", "--set", "monitor.max_cycles=1"],
        "sessions": ["sessions"],
        "trace": ["trace", "some-session"],
    }[command]
    result = runner.invoke(
        make_app(Loaders(load_engine=no_model)), [*args, "--store", url, "--root", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert url in lines[0] and "start redis-server" in lines[0]


@pytest.mark.integration
def test_redis_killed_mid_session_stops_cleanly_and_resume_completes(
    own_redis: RedisServer, tmp_path: Path, reference: Outcome
) -> None:
    session, url = "redis-loss", own_redis.url
    first = launch(url, tmp_path, session)
    with open_store(url, tmp_path) as store:
        wait_for_key(store.events, session, "c1/optimize/0", first)
    own_redis.kill()

    assert first.wait() == 2, first.output()
    error = first.stderr.strip().splitlines()[-1]
    assert "Traceback" not in first.stderr
    assert url in error and f"autodidact resume {session} --store {url}" in error

    own_redis.start()  # same port, same folder: the append-only file is replayed
    with open_store(url, tmp_path) as store:
        values = checkpoint_values(store, session)
        assert values["cycle"] == 1 and "v1" not in values["versions"], (
            "the checkpoint of the last completed node (select) is intact"
        )
        second = launch(url, tmp_path, session, resume=True)
        assert second.wait() == 0, second.output()
        done = outcome(store, session)
        events = store.events.read(session)
    assert [d[0] for d in done.decisions] == ["loop", "stop"]
    assert_same_session(done, reference)
    starts = [(e.cycle, e.node) for e in events if e.kind == "node_start"]
    ends = [(e.cycle, e.node) for e in events if e.kind == "node_end"]
    assert sorted(starts) == sorted(ends), "every node that started also ended, once"


@pytest.mark.integration
def test_two_concurrent_sessions_on_one_redis_never_mix(redis_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    sessions = [f"twin-a-{tag}", f"twin-b-{tag}"]
    workers = [launch(redis_url, tmp_path, s, sets=["monitor.max_cycles=1"]) for s in sessions]
    for worker in workers:
        assert worker.wait() == 0, worker.output()

    with open_store(redis_url, tmp_path) as store:
        done = {s: outcome(store, s) for s in sessions}
        for s in sessions:
            events = store.events.read(s)
            assert events and {e.session_id for e in events} == {s}
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            values = checkpoint_values(store, s)
            assert values["session_id"] == s
            folder = tmp_path / "sessions" / s
            assert all(
                Path(v["path"]).is_relative_to(folder)
                for v in values["versions"].values()
                if v["path"]
            ), "each session's model versions live in its own folder"
            config: RunnableConfig = {"configurable": {"thread_id": s}}
            for saved in store.checkpointer.list(config):
                assert saved.config["configurable"]["thread_id"] == s
                assert saved.checkpoint["channel_values"].get("session_id", s) == s
    a, b = (done[s] for s in sessions)
    assert a.status == b.status == "finished"
    assert a.keys == b.keys, "same policy, same seed: the same events, each in its own log"
    assert a.decisions == b.decisions
