"""Kill points: named moments of a session at which a worker process SIGKILLs itself.

    python tests/session_worker.py ... --kill-at NAME[:N] --kill-marker FILE

The worker dies the N-th time (default 1) it reaches NAME, after writing `NAME:N` to FILE
(the proof that the point was reached: a worker that ends any other way leaves no marker).
The points are patched into the worker process only; the library has no hooks for them.

    node.<node>            the node function has done its work (events emitted, files
                           written), its update not yet handed back to LangGraph
    emit.<node>            the node is about to emit an event (progress included): the
                           moments through its work, between two sampled prompts, two
                           training steps, two scored dev items
    checkpoint.put         inside the checkpointer's put, its data sent, not committed
    checkpoint.put_writes  inside the checkpointer's put_writes (a node's writes), the same
    event.append           inside the event log's append
    artifact.write         an artifact file written to its temp file (storage.artifacts),
                           not yet renamed into place
    artifact.manifest      the manifest's new copy written, not yet renamed over the old one

"Sent, not committed" is per backend. SQLite: the statements executed, the COMMIT not
reached (the transaction is left for SQLite to roll back). Redis: a checkpoint's
MULTI/EXEC pipeline queued, not sent (its sequence number already taken); an event's
append script has run on the server, its reply not yet returned to the session.

`--moments-out FILE` writes every point reached, in order, when the worker ends: the
census a test draws random kill moments from.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODES = (
    "fit_probe_on_answers",
    "baseline",
    "acquire",
    "select",
    "refit_probe_on_samples",
    "optimize",
    "evaluate",
    "monitor",
    "finalize",
)
STORE_POINTS = (
    "checkpoint.put",
    "checkpoint.put_writes",
    "event.append",
    "artifact.write",
    "artifact.manifest",
)
POINTS = (
    *(f"node.{node}" for node in NODES),
    *(f"emit.{node}" for node in NODES),
    *STORE_POINTS,
)

WHERE = {
    "node": "in {node}: its work done, its update not yet returned",
    "emit": "in {node}: before one of its events",
    "checkpoint.put": "in a checkpoint write: sent, not committed",
    "checkpoint.put_writes": "in a node's checkpoint writes: sent, not committed",
    "event.append": "in an event append",
    "artifact.write": "in an artifact write: temp file written, not renamed",
    "artifact.manifest": "in the manifest's update: temp file written, not renamed",
}

# the store write under way in this thread (a kill point's name), if any
_INSIDE: ContextVar[str | None] = ContextVar("kill_points_inside", default=None)


def parse(spec: str) -> tuple[str, int]:
    """`NAME[:N]` -> (NAME, N); ValueError naming the known points.

    >>> parse("node.optimize:2")
    ('node.optimize', 2)
    >>> parse("event.append")
    ('event.append', 1)
    >>> parse("node.train")
    Traceback (most recent call last):
    ValueError: unknown kill point 'node.train': one of node.fit_probe_on_answers, node.baseline, ...
    """
    name, _, n = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"unknown kill point {name!r}: one of {', '.join(POINTS[:2])}, ...")
    count = int(n or 1)
    if count < 1:
        raise ValueError(f"kill point {spec!r}: N counts from 1")
    return name, count


def where(name: str) -> str:
    """Where the kill point `name` lands, in a few words.

    >>> where("node.refit_probe_on_samples")
    'in refit_probe_on_samples: its work done, its update not yet returned'
    """
    kind, _, node = name.partition(".")
    return WHERE[name] if name in WHERE else WHERE[kind].format(node=node)


@dataclass
class KillPoints:
    """The points this process reached, in order, and the one it dies at (if any)."""

    target: tuple[str, int] | None = None
    marker: Path | None = None
    reached: list[str] = field(default_factory=list)
    _counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reach(self, name: str) -> None:
        """Count `name`; at the target, write the marker and SIGKILL this process. The
        lock stays held, so no other thread passes a point in between."""
        with self._lock:
            self.reached.append(name)
            self._counts[name] += 1
            if self.target == (name, self._counts[name]):
                if self.marker is not None:
                    with self.marker.open("w") as handle:
                        handle.write(f"{name}:{self._counts[name]}")
                        handle.flush()
                        os.fsync(handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str | None, marker: Path | None) -> KillPoints:
    """Patch every kill point into this process; die at `spec` (`NAME[:N]`), if given."""
    points = KillPoints(parse(spec) if spec else None, marker)
    _patch_nodes(points)
    _patch_emitter(points)
    _patch_checkpointers(points)
    _patch_event_logs(points)
    _patch_artifacts(points)
    return points


# ---------------------------------------------------------------- the patches


def _patch_nodes(points: KillPoints) -> None:
    import graph.nodes

    for name in NODES:
        original = getattr(graph.nodes.Nodes, name)

        # wraps: LangGraph reads the node's signature and its Command[Literal[...]] routes
        @functools.wraps(original)
        def node(
            self: Any, state: Any, runtime: Any, _original: Any = original, _name: str = name
        ) -> Any:
            update = _original(self, state, runtime)
            points.reach(f"node.{_name}")
            return update

        setattr(graph.nodes.Nodes, name, node)


def _patch_emitter(points: KillPoints) -> None:
    import graph.events

    call = graph.events.Emitter.__call__

    def emit(self: Any, message: str, record: Any) -> None:
        points.reach(f"emit.{self.node}")
        call(self, message, record)

    graph.events.Emitter.__call__ = emit  # type: ignore[method-assign]


def _inside(point: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, with `point` named as the write under way while it runs."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        token = _INSIDE.set(point)
        try:
            return method(*args, **kwargs)
        finally:
            _INSIDE.reset(token)

    return call


class _Committing:
    """A sqlite3 connection whose COMMIT is the kill point of the write under way."""

    def __init__(self, conn: Any, points: KillPoints) -> None:
        self._conn, self._points = conn, points

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        if point := _INSIDE.get():
            self._points.reach(point)
        self._conn.commit()


class _Pipelines:
    """A Redis client whose pipelines' EXEC is the kill point of the write under way."""

    def __init__(self, client: Any, points: KillPoints) -> None:
        self._client, self._points = client, points

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return _Executing(self._client.pipeline(*args, **kwargs), self._points)


class _Executing:
    def __init__(self, pipe: Any, points: KillPoints) -> None:
        self._pipe, self._points = pipe, points

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if point := _INSIDE.get():
            self._points.reach(point)
        return self._pipe.execute(*args, **kwargs)


def _patch_checkpointers(points: KillPoints) -> None:
    import storage.store

    def instrumented(make_saver: Callable[..., Any]) -> Callable[..., Any]:
        def make(*args: Any, **kwargs: Any) -> Any:
            saver = make_saver(*args, **kwargs)
            saver.put = _inside("checkpoint.put", saver.put)
            saver.put_writes = _inside("checkpoint.put_writes", saver.put_writes)
            if hasattr(saver, "conn"):  # SqliteSaver
                saver.conn = _Committing(saver.conn, points)
            else:  # plainredis RedisSaver
                saver.client = _Pipelines(saver.client, points)
            return saver

        return make

    storage.store.sqlite_saver = instrumented(storage.store.sqlite_saver)  # type: ignore[assignment]
    storage.store.redis_saver = instrumented(storage.store.redis_saver)  # type: ignore[assignment]


def _patch_event_logs(points: KillPoints) -> None:
    from storage.events import RedisEventLog, SqliteEventLog

    init = SqliteEventLog.__init__

    def sqlite_init(self: SqliteEventLog, path: Any) -> None:
        init(self, path)
        self._conn = _Committing(self._conn, points)  # type: ignore[assignment]

    SqliteEventLog.__init__ = sqlite_init  # type: ignore[method-assign]
    SqliteEventLog.append = _inside("event.append", SqliteEventLog.append)  # type: ignore[method-assign]

    append = RedisEventLog.append

    def redis_append(self: RedisEventLog, event: Any) -> Any:
        appended = append(self, event)  # one Lua script: atomic on the server
        points.reach("event.append")
        return appended

    RedisEventLog.append = redis_append  # type: ignore[method-assign]


class _Renames:
    """`os` as storage.artifacts sees it: each rename into place is a kill point."""

    def __init__(self, points: KillPoints) -> None:
        self._points = points

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        import storage.artifacts

        manifest = Path(dst).name == storage.artifacts.MANIFEST
        self._points.reach("artifact.manifest" if manifest else "artifact.write")
        os.replace(src, dst, **kwargs)


def _patch_artifacts(points: KillPoints) -> None:
    import storage.artifacts

    storage.artifacts.os = _Renames(points)  # type: ignore[assignment]
