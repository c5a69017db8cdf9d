"""The persisted event log and sessions registry: one interface, SQLite and Redis backends.

Appends are idempotent per `(session_id, key)`, so a node re-run after a crash-resume
re-emits the same keys and the log keeps one copy. `seq` counts from 1 per session."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import redis

from storage.connect import connect_sqlite
from storage.errors import EventVersionError
from storage.records import EVENT_SCHEMA_VERSION, Event, SessionInfo, json_default

Stop = Callable[[], bool]
MAX_BLOCK_MS = 5000  # below connect.SOCKET_TIMEOUT_S


def never() -> bool:
    """A `stop` callback that never stops."""
    return False


class EventLog(Protocol):
    """Where a session's events and the sessions registry are kept."""

    def append(self, event: Event) -> Event | None:
        """Store `event` with the next `seq`; None when its key is already in the log."""
        ...

    def read(self, session_id: str, after_seq: int = 0) -> list[Event]:
        """Events of one session with `seq > after_seq`, in order."""
        ...

    def follow(
        self, session_id: str, after_seq: int = 0, poll_s: float = 0.5, stop: Stop = never
    ) -> Iterator[Event]:
        """Yield events as they are appended; drain what is there, then end once `stop()`."""
        ...

    def put_session(self, info: SessionInfo) -> None:
        """Create or replace the registry row of `info.session_id`."""
        ...

    def get_session(self, session_id: str) -> SessionInfo | None:
        """The registry row of a session, or None."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every registered session, oldest first."""
        ...

    def close(self) -> None:
        """Release connections (the Redis client is the caller's and stays open)."""
        ...


def encode_event(event: Event) -> str:
    """The event as one JSON line, without its `seq` (the log's position holds that)."""
    return json.dumps(
        event.model_dump(mode="python", exclude={"seq"}), default=json_default, sort_keys=True
    )


def decode_event(body: str | bytes, seq: int) -> Event:
    """Inverse of `encode_event`, with the log's `seq`. Every layout up to
    `EVENT_SCHEMA_VERSION` reads; a newer one is refused (`EventVersionError`)."""
    fields = json.loads(body)
    version = fields.get("schema_version", EVENT_SCHEMA_VERSION)
    if isinstance(version, int) and version > EVENT_SCHEMA_VERSION:
        raise EventVersionError(
            f"event {fields.get('key')!r} of session {fields.get('session_id')!r} has schema "
            f"version {version}, newer than this autodidact reads (up to "
            f"{EVENT_SCHEMA_VERSION}): read the session with the autodidact that wrote it, or "
            "upgrade this one"
        )
    return Event.model_validate({**fields, "seq": seq})


def follow_by_polling(
    read: Callable[[int], list[Event]],
    wait: Callable[[int], None],
    after_seq: int,
    stop: Stop,
) -> Iterator[Event]:
    """Shared follow loop: read new events, yield them, wait; after `stop()`, one last read."""
    while True:
        stopping = stop()
        for event in read(after_seq):
            after_seq = event.seq
            yield event
        if stopping:
            return
        wait(after_seq)


# --------------------------------------------------------------------------- SQLite

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, key)
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
"""

SQLITE_APPEND = """
INSERT OR IGNORE INTO events (session_id, seq, key, ts, kind, body)
SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ? FROM events WHERE session_id = ?
RETURNING seq
"""


class SqliteEventLog:
    """Event log in the `events` and `sessions` tables of a SQLite file (or `:memory:`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(self.path)
        # reentrant: a signal handler in the thread that holds it still writes (cli.interrupts)
        self._lock = threading.RLock()
        with self._tx() as cur:
            cur.executescript(SQLITE_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    def append(self, event: Event) -> Event | None:
        """Store `event` with the next `seq`; None when its key is already in the log."""
        sid = event.session_id
        args = (sid, event.key, event.ts, event.kind, encode_event(event), sid)
        with self._tx() as cur:
            rows = cur.execute(SQLITE_APPEND, args).fetchall()
        return event.model_copy(update={"seq": int(rows[0][0])}) if rows else None

    def read(self, session_id: str, after_seq: int = 0) -> list[Event]:
        """Events of one session with `seq > after_seq`, in order."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT seq, body FROM events WHERE session_id = ? AND seq > ? ORDER BY seq",
                (session_id, after_seq),
            ).fetchall()
        return [decode_event(body, seq) for seq, body in rows]

    def follow(
        self, session_id: str, after_seq: int = 0, poll_s: float = 0.5, stop: Stop = never
    ) -> Iterator[Event]:
        """Yield events as they are appended (polling every `poll_s`) until `stop()`."""
        return follow_by_polling(
            lambda after: self.read(session_id, after),
            lambda _: time.sleep(poll_s),
            after_seq,
            stop,
        )

    def put_session(self, info: SessionInfo) -> None:
        """Create or replace the registry row of `info.session_id`."""
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO sessions (session_id, created_at, body) VALUES (?, ?, ?)",
                (info.session_id, info.created_at, info.model_dump_json()),
            )

    def get_session(self, session_id: str) -> SessionInfo | None:
        """The registry row of a session, or None."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT body FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        return None if row is None else SessionInfo.model_validate_json(row[0])

    def list_sessions(self) -> list[SessionInfo]:
        """Every registered session, oldest first."""
        with self._tx() as cur:
            rows = cur.execute("SELECT body FROM sessions ORDER BY created_at").fetchall()
        return [SessionInfo.model_validate_json(body) for (body,) in rows]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- Redis

# KEYS: the session's key hash, its stream. ARGV: idempotency key, event JSON.
# The stream entry id is `{seq}-0`, so `after_seq` maps straight onto stream ids.
REDIS_APPEND = """
if redis.call('HSETNX', KEYS[1], ARGV[1], 0) == 0 then return 0 end
local seq = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], seq)
redis.call('XADD', KEYS[2], seq .. '-0', 'event', ARGV[2])
return seq
"""


def stream_seq(entry_id: bytes | str) -> int:
    """The `seq` a stream entry id carries.

    >>> stream_seq(b"12-0")
    12
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _field(fields: dict[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


class RedisEventLog:
    """Event log as one Redis Stream per session, plus a registry hash.

    Keys for session `s1` with the default prefix: `autodidact:{s1}:events` (stream),
    `autodidact:{s1}:keys` (idempotency key -> seq), `autodidact:sessions` (registry).
    The literal braces are a cluster hash tag: one session's keys share one slot."""

    def __init__(self, client: redis.Redis, prefix: str = "autodidact") -> None:
        self.client = client
        self.prefix = prefix.rstrip(":")
        self._append = client.register_script(REDIS_APPEND)

    def _key(self, session_id: str, what: str) -> str:
        return f"{self.prefix}:{{{session_id}}}:{what}"

    @property
    def _sessions_key(self) -> str:
        return f"{self.prefix}:sessions"

    def append(self, event: Event) -> Event | None:
        """Store `event` with the next `seq`; None when its key is already in the log."""
        keys = [self._key(event.session_id, "keys"), self._key(event.session_id, "events")]
        seq = int(self._append(keys=keys, args=[event.key, encode_event(event)]))
        return None if seq == 0 else event.model_copy(update={"seq": seq})

    def read(self, session_id: str, after_seq: int = 0) -> list[Event]:
        """Events of one session with `seq > after_seq`, in order."""
        key = self._key(session_id, "events")
        entries: list[Any] = self.client.xrange(key, min=f"{after_seq + 1}-0") or []
        return [decode_event(_field(fields, "event"), stream_seq(eid)) for eid, fields in entries]

    def _wait(self, session_id: str, after_seq: int, block_ms: int) -> None:
        """Block until the stream has an entry after `after_seq` or `block_ms` passes."""
        self.client.xread(
            {self._key(session_id, "events"): f"{after_seq}-0"}, count=1, block=block_ms
        )

    def follow(
        self, session_id: str, after_seq: int = 0, poll_s: float = 0.5, stop: Stop = never
    ) -> Iterator[Event]:
        """Yield events as they are appended (XREAD BLOCK up to `poll_s`) until `stop()`."""
        block_ms = max(1, min(int(poll_s * 1000), MAX_BLOCK_MS))
        return follow_by_polling(
            lambda after: self.read(session_id, after),
            lambda after: self._wait(session_id, after, block_ms),
            after_seq,
            stop,
        )

    def put_session(self, info: SessionInfo) -> None:
        """Create or replace the registry row of `info.session_id`."""
        self.client.hset(self._sessions_key, info.session_id, info.model_dump_json())

    def get_session(self, session_id: str) -> SessionInfo | None:
        """The registry row of a session, or None."""
        raw = self.client.hget(self._sessions_key, session_id)
        return None if raw is None else SessionInfo.model_validate_json(raw)

    def list_sessions(self) -> list[SessionInfo]:
        """Every registered session, oldest first."""
        rows = self.client.hgetall(self._sessions_key)
        infos = [SessionInfo.model_validate_json(raw) for raw in rows.values()]
        return sorted(infos, key=lambda info: (info.created_at, info.session_id))

    def close(self) -> None:
        """Nothing to release: the client belongs to whoever opened it."""
