"""EventLog contract, run against every backend (SQLite file and real Redis)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from storage import Event, EventLog, RedisEventLog, SessionInfo, SqliteEventLog
from storage.connect import connect_redis

OpenLog = Callable[[], EventLog]
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_log(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OpenLog]:
    """A factory of logs on one shared database (a second call = another connection)."""
    opened: list[EventLog] = []
    if backend == "sqlite":

        def make() -> EventLog:
            opened.append(SqliteEventLog(tmp_path / "store" / "events.db"))
            return opened[-1]

        yield make
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"autodidact-test-{uuid.uuid4().hex[:8]}"
        clients = []

        def make() -> EventLog:
            clients.append(connect_redis(url))
            opened.append(RedisEventLog(clients[-1], prefix=prefix))
            return opened[-1]

        yield make
        cleaner = connect_redis(url)
        keys = list(cleaner.scan_iter(match=f"{prefix}:*"))
        if keys:
            cleaner.delete(*keys)
        for client in [*clients, cleaner]:
            client.close()
    for log in opened:
        log.close()


@pytest.fixture
def log(open_log: OpenLog) -> EventLog:
    return open_log()


def event(session_id: str, key: str, **fields: object) -> Event:
    base: dict[str, object] = {
        "session_id": session_id,
        "key": key,
        "ts": time.time(),
        "kind": "action",
        "node": "acquire",
        "cycle": 1,
        "message": f"did {key}",
        "data": {"key": key},
    }
    return Event.model_validate(base | fields)


def new_session() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_append_assigns_increasing_seq_and_read_keeps_order(log: EventLog) -> None:
    sid = new_session()
    stored = [log.append(event(sid, f"c1/acquire/{i}")) for i in range(5)]
    assert [e.seq for e in stored if e] == [1, 2, 3, 4, 5]

    events = log.read(sid)
    assert [e.key for e in events] == [f"c1/acquire/{i}" for i in range(5)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.key for e in log.read(sid, after_seq=3)] == ["c1/acquire/3", "c1/acquire/4"]
    assert log.read(sid, after_seq=5) == []


def test_read_round_trips_every_field(log: EventLog) -> None:
    sid = new_session()
    original = event(
        sid,
        "c2/optimize/5",
        kind="metric",
        node=None,
        cycle=None,
        data={
            "loss": 0.25,
            "nested": {"xs": [1, 2]},
            "path": Path("a/b"),
            "np": [np.float32(0.5), np.int64(3), np.array([1, 2])],
        },
    )
    stored = log.append(original)
    assert stored is not None and stored.seq == 1
    (back,) = log.read(sid)
    assert back.model_dump(exclude={"data"}) == stored.model_dump(exclude={"data"})
    assert back.data == {
        "loss": 0.25,
        "nested": {"xs": [1, 2]},
        "path": "a/b",
        "np": [0.5, 3, [1, 2]],
    }


def test_re_appending_a_key_is_a_no_op(log: EventLog) -> None:
    sid = new_session()
    first = log.append(event(sid, "c1/select/0", message="first"))
    assert first is not None
    assert log.append(event(sid, "c1/select/0", message="replayed after resume")) is None
    log.append(event(sid, "c1/select/1"))

    events = log.read(sid)
    assert [(e.seq, e.key, e.message) for e in events] == [
        (1, "c1/select/0", "first"),
        (2, "c1/select/1", "did c1/select/1"),
    ]


def test_concurrent_appends_get_distinct_contiguous_seqs(open_log: OpenLog) -> None:
    sid = new_session()
    logs = [open_log() for _ in range(4)]

    def worker(n: int) -> None:
        for i in range(25):
            logs[n].append(event(sid, f"w{n}/{i}"))
            logs[n].append(event(sid, f"w{(n + 1) % 4}/{i}"))  # races on the same key

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    events = logs[0].read(sid)
    assert [e.seq for e in events] == list(range(1, 101))
    for n in range(4):  # each key once, a writer's keys in the order they were written
        assert [e.key for e in events if e.key.startswith(f"w{n}/")] == [
            f"w{n}/{i}" for i in range(25)
        ]


def test_follow_sees_events_appended_from_another_thread(open_log: OpenLog) -> None:
    sid = new_session()
    writer, reader = open_log(), open_log()
    writer.append(event(sid, "before/0"))
    done = threading.Event()
    seen: list[str] = []

    def consume() -> None:
        for e in reader.follow(sid, after_seq=1, poll_s=0.05, stop=done.is_set):
            seen.append(e.key)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(5):
        writer.append(event(sid, f"live/{i}"))
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.append(event(sid, "last"))
    done.set()
    consumer.join(timeout=10)

    assert not consumer.is_alive()
    assert seen == [f"live/{i}" for i in range(5)] + ["last"]


def test_follow_drains_then_stops(log: EventLog) -> None:
    sid = new_session()
    for i in range(3):
        log.append(event(sid, f"k{i}"))
    started = time.monotonic()
    keys = [e.key for e in log.follow(sid, poll_s=5.0, stop=lambda: True)]
    assert keys == ["k0", "k1", "k2"]
    assert time.monotonic() - started < 1.0


def test_two_sessions_never_mix(log: EventLog) -> None:
    one, two = new_session(), new_session()
    for i in range(3):
        log.append(event(one, f"k{i}"))
        log.append(event(two, f"k{i}", message="two"))  # same keys, other session

    assert [(e.seq, e.session_id) for e in log.read(one)] == [(1, one), (2, one), (3, one)]
    assert [(e.seq, e.message) for e in log.read(two)] == [(i, "two") for i in (1, 2, 3)]
    assert log.read(new_session()) == []


def session_info(session_id: str, created_at: float, **fields: object) -> SessionInfo:
    base: dict[str, object] = {
        "session_id": session_id,
        "status": "running",
        "task": "capitals",
        "model": "smollm2-135m",
        "store_url": "redis://:secret@127.0.0.1:6379/0",
        "created_at": created_at,
        "updated_at": created_at,
    }
    return SessionInfo.model_validate(base | fields)


def test_sessions_registry_round_trip(log: EventLog) -> None:
    older, newer = new_session(), new_session()
    assert log.get_session(older) is None
    log.put_session(session_info(newer, 200.0))
    log.put_session(session_info(older, 100.0, pid=42))
    finished = session_info(older, 100.0, status="finished", cycles=3, best_accuracy=0.75)
    log.put_session(finished.model_copy(update={"updated_at": 300.0}))

    got = log.get_session(older)
    assert got is not None
    assert (got.status, got.cycles, got.best_accuracy, got.updated_at) == (
        "finished",
        3,
        0.75,
        300.0,
    )
    assert got.store_url == "redis://:***@127.0.0.1:6379/0"
    mine = [s.session_id for s in log.list_sessions() if s.session_id in (older, newer)]
    assert mine == [older, newer]


def test_redis_keys_are_namespaced_by_session() -> None:
    log = RedisEventLog(redis.Redis())  # no connection is made until a command runs
    assert log._key("abc", "events") == "autodidact:{abc}:events"
    assert log._key("abc", "keys") == "autodidact:{abc}:keys"


def test_a_killed_running_session_reads_interrupted() -> None:
    import os
    import socket
    import subprocess
    import sys

    gone_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_pid.wait()  # reaped: its pid names no process now
    here = socket.gethostname()
    killed = session_info("a", 1.0, status="running", pid=gone_pid.pid, host=here)
    alive = session_info("b", 1.0, status="running", pid=os.getpid(), host=here)
    elsewhere = session_info("c", 1.0, status="running", pid=gone_pid.pid, host=here + "-other")
    finished = session_info("d", 1.0, status="finished", pid=gone_pid.pid, host=here)
    assert killed.shown_status == "interrupted"
    assert alive.shown_status == "running"
    assert elsewhere.shown_status == "running", "another host's process cannot be checked"
    assert finished.shown_status == "finished"
