"""`open_checkpointer(url)`: the LangGraph checkpointer a store URL names.

`sqlite:///path.db` and `sqlite:///:memory:` give langgraph's `SqliteSaver`;
`redis://[:password@]host:port/db` gives `langgraph-checkpoint-plainredis`'s sync
`RedisSaver` (core commands only, Redis 5+, no modules). Both pass LangGraph's
checkpointer conformance suite (tests/storage/test_storage_conformance.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager

import redis
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph_checkpoint_plainredis import RedisSaver

from storage.connect import connect_redis, connect_sqlite
from storage.urls import backend_of, sqlite_path

CHECKPOINT_PREFIX = "autodidact:lg"


def restoring(restorable: Sequence[type]) -> JsonPlusSerializer:
    """A checkpoint serializer allowed to restore `restorable` (pydantic records a graph's
    state holds) besides LangGraph's own safe types, and nothing else: no warning per
    type on load, and a checkpoint cannot name arbitrary classes to build.
    """
    return JsonPlusSerializer(
        allowed_msgpack_modules=[(kind.__module__, kind.__name__) for kind in restorable]
    )


def sqlite_saver(conn: sqlite3.Connection, restorable: Sequence[type] = ()) -> SqliteSaver:
    """A `SqliteSaver` on `conn`, its tables created now rather than on first use."""
    saver = SqliteSaver(conn, serde=restoring(restorable) if restorable else None)
    saver.setup()
    return saver


def redis_saver(client: redis.Redis, restorable: Sequence[type] = ()) -> RedisSaver:
    """plainredis's sync saver on `client`, its keys under `autodidact:lg:`."""
    return RedisSaver(
        client=client, prefix=CHECKPOINT_PREFIX, serde=restoring(restorable) if restorable else None
    )


@contextmanager
def open_checkpointer(url: str) -> Iterator[BaseCheckpointSaver]:
    """The checkpointer `url` names, closed on exit; `StoreError` for a bad or dead URL."""
    if backend_of(url) == "sqlite":
        with closing(connect_sqlite(sqlite_path(url))) as conn:
            yield sqlite_saver(conn)
        return
    with closing(connect_redis(url)) as client:
        yield redis_saver(client)
