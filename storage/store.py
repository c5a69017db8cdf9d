"""`open_store(url, root)`: checkpointer, event log and artifact root of one store URL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver

from storage.checkpointer import redis_saver, sqlite_saver
from storage.connect import connect_redis, connect_sqlite, redis_persistence_problem
from storage.events import EventLog, RedisEventLog, SqliteEventLog
from storage.urls import backend_of, mask_password, sqlite_path


@dataclass(frozen=True)
class Store:
    """What a session persists through: LangGraph checkpoints, the event log and the
    sessions registry (same database), and `root`, the folder artifacts live under."""

    url: str
    checkpointer: BaseCheckpointSaver
    events: EventLog
    root: Path
    warnings: tuple[str, ...] = ()  # worth telling the user once (e.g. Redis keeps no disk copy)

    @property
    def display_url(self) -> str:
        """`url` with any password masked, for messages and records."""
        return mask_password(self.url)


def default_store_url(root: Path | str) -> str:
    """The zero-setup store: a SQLite file in `root`.

    >>> default_store_url("runs")
    'sqlite:///runs/autodidact.db'
    """
    return f"sqlite:///{Path(root).as_posix()}/autodidact.db"


@contextmanager
def open_store(url: str, root: Path | str, *, restorable: Sequence[type] = ()) -> Iterator[Store]:
    """Open the store `url` names (SQLite: the events tables sit in the checkpoint db file;
    Redis: one client for both); `StoreError` with the fix when it cannot be opened.
    `restorable`: the record types the checkpoints hold (`graph.state.RECORD_TYPES`)."""
    folder = Path(root)
    if backend_of(url) == "sqlite":
        path = sqlite_path(url)
        with closing(connect_sqlite(path)) as conn, closing(SqliteEventLog(path)) as events:
            yield Store(url, sqlite_saver(conn, restorable), events, folder)
        return
    with closing(connect_redis(url)) as client:
        warning = redis_persistence_problem(client, url)
        yield Store(
            url,
            redis_saver(client, restorable),
            RedisEventLog(client),
            folder,
            (warning,) if warning else (),
        )
