"""open_store: one URL gives checkpointer, event log and artifact root."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph_checkpoint_plainredis import RedisSaver

from storage import (
    Event,
    RedisEventLog,
    SqliteEventLog,
    StoreError,
    default_store_url,
    open_store,
)

REPO = Path(__file__).resolve().parents[2]


def test_default_store_url_is_a_sqlite_file_in_root(tmp_path: Path) -> None:
    assert default_store_url(tmp_path) == f"sqlite:///{tmp_path}/autodidact.db"
    assert default_store_url("runs") == "sqlite:///runs/autodidact.db"


def test_sqlite_store_keeps_events_in_the_checkpoint_db(tmp_path: Path) -> None:
    url = default_store_url(tmp_path / "root")
    with open_store(url, tmp_path / "root") as store:
        assert isinstance(store.checkpointer, SqliteSaver)
        assert isinstance(store.events, SqliteEventLog)
        assert store.root == tmp_path / "root"
        store.events.append(Event(session_id="s", key="k", ts=time.time(), kind="session"))

    db = tmp_path / "root" / "autodidact.db"
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"checkpoints", "writes", "events", "sessions"} <= tables
    with open_store(url, tmp_path / "root") as store:
        assert [e.key for e in store.events.read("s")] == ["k"]


def test_in_memory_store_works(tmp_path: Path) -> None:
    with open_store("sqlite:///:memory:", tmp_path) as store:
        assert store.events.append(Event(session_id="s", key="k", ts=0.0, kind="session"))
        assert store.checkpointer.get_tuple({"configurable": {"thread_id": "s"}}) is None


@pytest.mark.integration
def test_redis_store_shares_one_client(redis_url: str, tmp_path: Path) -> None:
    with open_store(redis_url, tmp_path) as store:
        assert isinstance(store.checkpointer, RedisSaver)
        assert isinstance(store.events, RedisEventLog)
        assert store.checkpointer.client is store.events.client
        assert store.display_url == store.url  # no password in the test URL


@pytest.mark.integration
def test_redis_without_persistence_is_a_warning_that_follows_the_setting(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    before = {**client.config_get("appendonly"), **client.config_get("save")}
    try:
        client.config_set("appendonly", "no")
        client.config_set("save", "")
        with open_store(redis_url, tmp_path) as store:
            assert len(store.warnings) == 1 and "keeps nothing on disk" in store.warnings[0]
        client.config_set("save", "3600 1")
        with open_store(redis_url, tmp_path) as store:
            assert store.warnings == ()
    finally:
        client.config_set("appendonly", before["appendonly"])
        client.config_set("save", before["save"])
        client.close()


def test_sqlite_store_has_no_warnings(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/a.db", tmp_path) as store:
        assert store.warnings == ()


def test_unreachable_redis_store_raises_store_error(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="cannot reach Redis"),
        open_store("redis://:pw@127.0.0.1:1/0", tmp_path),
    ):
        pass


def test_importing_storage_has_no_side_effects(tmp_path: Path) -> None:
    code = "import storage, storage.store, storage.artifacts, storage.events, storage.checkpointer"
    subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=True, env={"PYTHONPATH": str(REPO)}
    )
    assert list(tmp_path.iterdir()) == []
