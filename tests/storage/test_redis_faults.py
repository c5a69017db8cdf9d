"""Redis faults, against real redis-servers: unreachable at start, killed mid-session at
several points (then restarted with its append-only file), unreachable at resume, two
sessions sharing one server.

The mid-session tests start their own redis-server on a free port so they can kill and
restart it, and fork their session workers from one warm parent (tests/warm_workers.py),
so each kill and its resume costs seconds; the two-session test uses the shared test
Redis (`redis_url`); the unreachable one points at a port nothing listens on."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import Loaders
from storage import Store, open_store
from storage.layout import SessionLayout
from storage.urls import mask_password
from tests.ci_rules import skip_or_fail_in_ci
from tests.session_worker import (
    Outcome,
    Worker,
    assert_same_session,
    checkpoint_values,
    launch,
    outcome,
    wait_for_key,
)
from tests.warm_workers import WarmWorkers

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own, persisted with an append-only file in `folder`
    so that what it acknowledged survives a kill -9 and a restart on the same port."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        secret = f":{self.password}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--appendonly", "yes", "--save", "", "--dir", str(self.folder)]
        command += ["--requirepass", self.password] if self.password else []
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
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


def need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        skip_or_fail_in_ci("redis-server is not installed (apt-get install redis-server)")


@contextmanager
def started(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.kill()


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    folder = tmp_path / "redis"
    folder.mkdir()
    with started(RedisServer(folder)) as server:
        yield server


@pytest.fixture()
def own_redis_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    folder = tmp_path / "redis"
    folder.mkdir()
    with started(RedisServer(folder, password=f"pw-{secrets.token_hex(8)}")) as server:
        yield server


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmWorkers]:
    """Session workers forked from one parent that imported torch and the rest once."""
    need_redis_server()
    with WarmWorkers(tmp_path_factory.mktemp("warm") / "parent.log") as workers:
        yield workers


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


UNBUDGETED = ("monitor.project_wall_budget=false", "monitor.max_wall_minutes=10000")
# Every checkpoint put of a run whose Redis is to be killed waits this long first: the
# node under way when the test sees its event cannot have its checkpoint written before
# Redis is gone, however busy the machine (a tiny node takes well under a second).
SLOW_PUT_S = 0.5


def after_probe(values: dict[str, Any]) -> None:
    assert values["probe"] == "probes/probe-0" and not values["versions"]
    assert not values.get("history"), "baseline's v0 and its metrics are not in it"


def after_baseline(values: dict[str, Any]) -> None:
    assert values["cycle"] == 0 and set(values["versions"]) == {"v0"}
    assert len(values["history"]) == 1, "v0's metrics, and no cycle begun"


def after_refit_1(values: dict[str, Any]) -> None:
    assert values["cycle"] == 1 and values["data"]["sft"] > 0
    assert values["probe"] == "probes/cycle-1", "refit's probe is in it"
    assert "v1" not in values["versions"], "no v1 trained"


def after_optimize_2(values: dict[str, Any]) -> None:
    assert values["cycle"] == 2 and {"v1", "v2"} <= set(values["versions"])
    assert len(values["history"]) == 2, "v2 trained, not yet evaluated"


def after_monitor_2(values: dict[str, Any]) -> None:
    assert [d.action for d in values["decisions"]] == ["loop", "stop"]
    assert values["status"] == "running" and "final" not in values, "finalize not in it"


# (event key, what the last checkpoint holds once Redis is killed as that key is logged):
# the key's node is under way, the checkpoint is the previous node's
KILLS: dict[str, Callable[[dict[str, Any]], None]] = {
    "c0/baseline/0": after_probe,  # baseline started: v0 not yet evaluated
    "c1/acquire/0": after_baseline,  # cycle 1 begun: sampling under way
    "c1/optimize/0": after_refit_1,  # training v1
    "c2/evaluate/0": after_optimize_2,  # evaluating v2
    "c2/finalize/2": after_monitor_2,  # finalize logged `finished`, its step not checkpointed
}


def kill_redis_at(
    server: RedisServer, warm: WarmWorkers, root: Path, session: str, key: str
) -> Worker:
    """Run the tiny session until `key` is logged, kill -9 its Redis, and return the
    worker once it has ended (it must, by itself)."""
    first = warm.launch(server.url, root, session, sets=UNBUDGETED, slow_checkpoints=SLOW_PUT_S)
    with open_store(server.url, root) as store:
        wait_for_key(store.events, session, key, first)
        server.kill()
    first.wait()
    return first


def assert_one_line_error(worker: Worker, *names: str) -> str:
    """Exit 2, one line on stderr holding each of `names`, no traceback; the line."""
    assert worker.proc.returncode == 2, worker.output()
    assert "Traceback" not in worker.stderr, worker.output()
    lines = worker.stderr.strip().splitlines()
    assert len(lines) == 1, worker.output()
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def assert_ends_like(store: Store, session: str, reference: Outcome) -> None:
    done = outcome(store, session)
    assert [d[0] for d in done.decisions] == ["loop", "stop"]
    assert_same_session(done, reference)
    events = store.events.read(session)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    starts = Counter((e.cycle, e.node) for e in events if e.kind == "node_start")
    ends = Counter((e.cycle, e.node) for e in events if e.kind == "node_end")
    assert starts == ends and set(starts.values()) == {1}, "every started node ended, once"


@pytest.mark.integration
@pytest.mark.parametrize("key", list(KILLS))
def test_redis_killed_mid_session_stops_cleanly_and_resume_completes(
    key: str,
    own_redis: RedisServer,
    warm: WarmWorkers,
    tmp_path: Path,
    reference: Outcome,
) -> None:
    session, url, root = "redis-loss", own_redis.url, tmp_path / "root"
    first = kill_redis_at(own_redis, warm, root, session, key)
    assert_one_line_error(first, url, f"autodidact resume {session} --store {url} --root {root}")

    own_redis.start()  # same port, same folder: the append-only file is replayed
    with open_store(url, root) as store:
        logged = [e.key for e in store.events.read(session)]
        assert key in logged and logged == reference.keys[: len(logged)], (
            "what the killed run logged is the reference's beginning, up to the kill"
        )
        info = store.events.get_session(session)
        assert info is not None and info.status != "finished"
        KILLS[key](checkpoint_values(store, session))  # the last checkpoint, intact
        second = warm.launch(url, root, session, resume=True, sets=UNBUDGETED)
        assert second.wait() == 0, second.output()
        assert_ends_like(store, session, reference)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder` (worker logs left out): size, mtime and sha256."""
    return {
        path.relative_to(folder).as_posix(): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "worker-logs" not in path.relative_to(folder).parts
    } | {
        f"{path.relative_to(folder).as_posix()}/": (0, path.stat().st_mtime_ns, "")
        for path in sorted(folder.rglob("*"))
        if path.is_dir() and "worker-logs" not in path.relative_to(folder).parts
    }


@pytest.mark.integration
def test_redis_unreachable_at_resume_is_one_line_then_resume_works(
    own_redis_with_password: RedisServer,
    warm: WarmWorkers,
    tmp_path: Path,
    reference: Outcome,
) -> None:
    server, session, root = own_redis_with_password, "redis-gone", tmp_path / "root"
    url, shown, password = server.url, mask_password(server.url), str(server.password)
    assert shown != url and password not in shown
    first = kill_redis_at(server, warm, root, session, "c1/optimize/0")
    assert_one_line_error(first, shown, f"autodidact resume {session} --store {shown}")
    before = snapshot(root)

    refused = warm.launch(url, root, session, resume=True, sets=UNBUDGETED)
    assert refused.wait() == 2, refused.output()
    line = assert_one_line_error(refused, shown, "start redis-server")
    assert "cannot reach Redis" in line
    for worker in (first, refused):
        assert password not in worker.stdout + worker.stderr, "the password is never printed"
    assert snapshot(root) == before, "a resume that cannot reach its store writes nothing"

    server.start()
    with open_store(url, root) as store:
        after_refit_1(checkpoint_values(store, session))
        second = warm.launch(url, root, session, resume=True, sets=UNBUDGETED)
        assert second.wait() == 0, second.output()
        assert password not in second.stdout + second.stderr
        assert_ends_like(store, session, reference)


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
            folder = SessionLayout.of(tmp_path, s).folder
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
