"""open_checkpointer: URL handling, one-line errors, password masking, crash-resume."""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from storage import StoreError, mask_password, open_checkpointer
from storage.urls import backend_of, sqlite_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message


def test_unreachable_redis_is_one_line_naming_url_and_fix() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError) as caught, open_checkpointer(url):
        pass
    message = str(caught.value)
    assert_one_line(message)
    assert url in message
    assert "redis-server" in message and "--store sqlite:///" in message


def test_unreachable_redis_never_shows_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/2"
    with pytest.raises(StoreError) as caught, open_checkpointer(url):
        pass
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.integration
def test_wrong_password_is_one_line_and_masked(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://intruder:hunter2@", 1)
    with pytest.raises(StoreError) as caught, open_checkpointer(url):
        pass
    message = str(caught.value)
    assert_one_line(message)
    assert "hunter2" not in message and "intruder:***@" in message
    assert "password" in message


@pytest.mark.parametrize(
    "url", ["postgres://db/x", "sqlite://relative.db", "/tmp/a.db", "redis://127.0.0.1:notaport/0"]
)
def test_bad_urls_say_what_is_supported(url: str) -> None:
    with pytest.raises(StoreError) as caught, open_checkpointer(url):
        pass
    message = str(caught.value)
    assert_one_line(message)
    assert "sqlite:///" in message or "redis://" in message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:p%40ss@h:1/0", "rediss://user:***@h:1/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("sqlite:////abs/a.db", "sqlite:////abs/a.db"),
    ],
)
def test_mask_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked


def test_url_parsing() -> None:
    assert backend_of("redis://h:1/0") == "redis"
    assert sqlite_path("sqlite:////tmp/x/a.db") == "/tmp/x/a.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"


def test_sqlite_file_is_created_with_parent_folders(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "store.db"
    with open_checkpointer(f"sqlite:///{db}") as saver:
        assert saver.get_tuple({"configurable": {"thread_id": "none"}}) is None
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"checkpoints", "writes"} <= tables


# ------------------------------------------------------------------ crash-resume


class Counter(TypedDict):
    steps: list[str]


def flaky_graph(saver: BaseCheckpointSaver, runs: dict[str, int], fail_b: bool) -> Any:
    """a -> b -> END; `b` raises while `fail_b`, as a crash in the middle of a session."""

    def a(state: Counter) -> dict[str, Any]:
        runs["a"] += 1
        return {"steps": [*state["steps"], "a"]}

    def b(state: Counter) -> dict[str, Any]:
        runs["b"] += 1
        if fail_b:
            raise RuntimeError("crash in b")
        return {"steps": [*state["steps"], "b"]}

    builder = StateGraph(Counter)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("redis", marks=pytest.mark.integration)]
)
def test_a_crashed_graph_resumes_from_its_checkpoint_after_reopening(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("redis_url") if backend == "redis" else f"sqlite:///{tmp_path}/s.db"
    )
    config = {"configurable": {"thread_id": f"resume-{uuid.uuid4().hex}"}}
    runs = {"a": 0, "b": 0}
    with open_checkpointer(url) as saver, pytest.raises(RuntimeError, match="crash in b"):
        flaky_graph(saver, runs, fail_b=True).invoke({"steps": []}, config)

    with open_checkpointer(url) as saver:  # a new process would open it afresh
        final = flaky_graph(saver, runs, fail_b=False).invoke(None, config)

    assert final["steps"] == ["a", "b"]
    assert runs == {"a": 1, "b": 2}


def test_a_silent_server_fails_fast_instead_of_hanging() -> None:
    """Something listens on the port but never answers (wrong service, dead proxy)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        started = time.monotonic()
        with pytest.raises(StoreError, match="cannot reach Redis"), open_checkpointer(url):
            pass
    assert time.monotonic() - started < 5


def test_unwritable_sqlite_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with (
        pytest.raises(StoreError, match="cannot open SQLite database"),
        open_checkpointer(f"sqlite:///{blocker}/sub/a.db"),
    ):
        pass
