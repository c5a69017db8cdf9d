"""A session stopped from outside ends cleanly and resumes to the same end: Ctrl-C
(SIGINT) or SIGTERM mid-node is recorded as `interrupted` by the process itself, and
exits 130 or 143 with the resume command; a full disk at a write is one line on stderr,
exit 2, the last checkpoint left as it was. `autodidact resume` then finishes the session
with the decisions, metrics and weights of an uninterrupted run (wall-clock budget rule
off, a fixed number of cycles). The signals go to a worker process (tests/session_worker.py)
on SQLite and on Redis; the full disk is injected in this process, on SQLite."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
import typer
from typer.testing import CliRunner, Result

import storage.artifacts
import storage.store
from cli.app import make_app
from cli.common import cli_command
from cli.interrupts import SIGNALS, ending_on_signals
from cli.view import console_view
from storage import Event, open_store
from storage.events import SqliteEventLog
from tests.session_worker import (
    Outcome,
    assert_same_session,
    checkpoint_values,
    cli_args,
    launch,
    outcome,
    parse_args,
    stand_in_loaders,
    wait_for_key,
)

UNBUDGETED = {"monitor.project_wall_budget": "false", "monitor.max_wall_minutes": "10000"}
SETS = [f"{key}={value}" for key, value in UNBUDGETED.items()]
STALL_S = 60.0  # optimize's stall: the signal must end it long before this


@pytest.fixture(scope="module")
def unbudgeted(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The uninterrupted tiny session, in this process, with the wall-clock rule off."""
    from tests.session_support import run_tiny_session

    root = tmp_path_factory.mktemp("unbudgeted")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        run_tiny_session(store, "reference", **UNBUDGETED)
        return outcome(store, "reference")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/autodidact.db"
    return str(request.getfixturevalue("redis_url"))  # sessions get unique ids


def autodidact(args: list[str]) -> Result:
    """`autodidact ARGS` in this process, with the worker's tiny stand-ins."""
    return CliRunner().invoke(make_app(stand_in_loaders()), args)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# ---------------------------------------------------------------- SIGINT, SIGTERM


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["sigint", "sigterm"],
)
def test_signal_mid_node_records_interrupted_and_resume_finishes(
    signum: int, code: int, said: str, store_url: str, tmp_path: Path, unbudgeted: Outcome
) -> None:
    url, session = store_url, f"signalled-{signum}-{uuid.uuid4().hex[:8]}"
    first = launch(url, tmp_path, session, sets=SETS, stall_before_version=STALL_S)
    with open_store(url, tmp_path) as store:
        wait_for_key(store.events, session, "c1/optimize/0", first)
        sent = time.monotonic()
        first.proc.send_signal(signum)
        assert first.wait() == code, first.output()
        assert time.monotonic() - sent < STALL_S / 2, "the signal must cut the node short"

        info = store.events.get_session(session)
        assert info is not None and info.status == "interrupted", (
            "the process itself records `interrupted` (not inferred from its absence)"
        )
        logged = {(e.node, e.kind) for e in store.events.read(session)}
        assert ("optimize", "node_end") not in logged, "the signal landed inside optimize"
        values = checkpoint_values(store, session)
        assert values["cycle"] == 1 and "v1" not in values["versions"], "last checkpoint: select"
        saved = store.checkpointer.get_tuple({"configurable": {"thread_id": session}})
        assert saved is not None and not saved.pending_writes, (
            "the stopped node wrote nothing to the checkpoint"
        )

        (line,) = lines_with(first.stderr, "continues from the last completed step")
        assert (
            line.startswith(said)
            and f"autodidact resume {session} --store {store.display_url}" in line
        )
        assert "Traceback" not in first.stderr, first.output()

        resumed = autodidact(["resume", session, "--store", url, "--root", str(tmp_path)])
        assert resumed.exit_code == 0, resumed.output
        assert_same_session(outcome(store, session), unbudgeted)


def test_signal_handlers_are_restored_on_the_way_out() -> None:
    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    with ending_on_signals(lambda _signum: None, lambda _signum: None):
        assert all(signal.getsignal(signum) is not before[signum] for signum in SIGNALS)
    assert {signum: signal.getsignal(signum) for signum in SIGNALS} == before


STUCK_LAST_WORDS = """
import os, signal, sys, threading, time
import cli.interrupts as interrupts

interrupts.LAST_WORDS_S = 0.5
held = threading.Lock()
held.acquire()  # as if the paused main thread held a lock the last words need
stuck = lambda signum: (held.acquire(), print("said", flush=True))
farewell = lambda signum: print(f"farewell {signum}", file=sys.stderr)
with interrupts.ending_on_signals(stuck, farewell):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
print("not ended")
"""


def test_last_words_that_cannot_finish_neither_keep_the_process_alive_nor_silence_it() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK_LAST_WORDS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 143, done.stderr
    assert done.stdout == "" and time.monotonic() - started < 20
    assert done.stderr == f"farewell {signal.SIGTERM.value}\n", "the farewell is still said"


INSIDE_A_STORE_CALL = """
import os, signal, sys, time
import cli.interrupts as interrupts
from storage import SessionInfo
from storage.events import SqliteEventLog

interrupts.LAST_WORDS_S = 2.0
log = SqliteEventLog(sys.argv[1])
row = SessionInfo(session_id="s", status="running", task="t", model="m", store_url="u",
                  created_at=0.0, updated_at=0.0)
log.put_session(row)
said = lambda signum: log.put_session(row.model_copy(update={"status": "interrupted"}))
with interrupts.ending_on_signals(said, lambda signum: print("farewell", file=sys.stderr)):
    with log._tx() as cur:  # the main thread inside a store call when the signal lands
        cur.execute("SELECT 1")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
"""


def test_last_words_reach_the_store_whose_call_the_signal_paused(tmp_path: Path) -> None:
    """The race a session hit: a signal while its main thread held the event log's lock
    left the registry row `running` (the last words waited on that lock until the time
    for them ran out)."""
    database = tmp_path / "events.db"
    done = subprocess.run(
        [sys.executable, "-c", INSIDE_A_STORE_CALL, str(database)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 143 and done.stderr == "farewell\n", done.stderr
    info = SqliteEventLog(database).get_session("s")
    assert info is not None and info.status == "interrupted"


# ---------------------------------------------------------------- a full disk


def latest_checkpoint_id(url: str, root: Path, session: str) -> str | None:
    with open_store(url, root) as store:
        saved = store.checkpointer.get_tuple({"configurable": {"thread_id": session}})
        return saved.checkpoint["id"] if saved else None


Fail = Callable[[], NoReturn]


def full_at_artifact(fail: Fail) -> tuple[Any, str, Any]:
    """Cycle 1's selected SFT data, written by select (in LangGraph's worker thread)."""
    write = storage.artifacts.atomic_write_bytes

    def full_write(target: Path, data: bytes) -> None:
        if target.name == "sft.jsonl" and target.parent.name == "cycle-1":
            fail()
        write(target, data)

    return storage.artifacts, "atomic_write_bytes", full_write


def full_at_event(fail: Fail) -> tuple[Any, str, Any]:
    """Select's second event, appended by this process's main thread while select goes
    on in its worker thread."""
    append = SqliteEventLog.append

    def full_append(log: SqliteEventLog, event: Event) -> Event | None:
        if event.key == "c1/select/1":
            fail()
        return append(log, event)

    return SqliteEventLog, "append", full_append


def full_at_checkpoint(fail: Fail) -> tuple[Any, str, Any]:
    """The fifth checkpoint put."""
    make_saver = storage.store.sqlite_saver

    def full_saver(*args: Any, **kwargs: Any) -> Any:
        saver = make_saver(*args, **kwargs)
        put, puts = saver.put, []

        def full_put(*put_args: Any, **put_kwargs: Any) -> Any:
            puts.append(1)
            if len(puts) == 5:
                fail()
            return put(*put_args, **put_kwargs)

        saver.put = full_put  # type: ignore[method-assign]
        return saver

    return storage.store, "sqlite_saver", full_saver


FULL_AT = {"artifact": full_at_artifact, "event": full_at_event, "checkpoint": full_at_checkpoint}


@contextmanager
def full_disk_at(where: str, url: str, root: Path) -> Iterator[list[str | None]]:
    """ENOSPC at one write (see FULL_AT). Yields a list that gets the id of the latest
    checkpoint at the moment of the failure."""
    seen: list[str | None] = []

    def fail() -> NoReturn:
        seen.append(latest_checkpoint_id(url, root, "full"))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(*FULL_AT[where](fail))
        yield seen


@pytest.mark.parametrize("where", sorted(FULL_AT))
def test_disk_full_is_one_line_exit_2_and_resume_finishes(
    where: str, tmp_path: Path, unbudgeted: Outcome
) -> None:
    url = f"sqlite:///{tmp_path}/autodidact.db"
    where_args = ["--store", url, "--root", str(tmp_path), "--session", "full"]
    run_args = cli_args(parse_args([*where_args, *(a for s in SETS for a in ("--set", s))]))
    with full_disk_at(where, url, tmp_path) as seen:
        result = autodidact(run_args)

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no space left on the device")
    assert f"autodidact resume full --store {url} --root {tmp_path}" in line
    assert len(seen) == 1, "the failure came from the injected write"
    with open_store(url, tmp_path) as store:
        saved = store.checkpointer.get_tuple({"configurable": {"thread_id": "full"}})
        assert saved is not None and saved.checkpoint["id"] == seen[0], (
            "the last checkpoint is the one written before the failure"
        )
        info = store.events.get_session("full")
        assert info is not None and info.status == "interrupted"

    resumed = autodidact(["resume", "full", "--store", url, "--root", str(tmp_path)])
    assert resumed.exit_code == 0, resumed.output
    with open_store(url, tmp_path) as store:
        assert_same_session(outcome(store, "full"), unbudgeted)


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs of its own; skips where mounting is not allowed (not root, or no
    CAP_SYS_ADMIN in a container)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:  # lazily: the loaded tiny model still maps its weights from there
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill_disk(path: Path) -> None:
    """Write `path` until the filesystem has not one byte left."""
    with path.open("wb", buffering=0) as handle:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(chunk)


def test_a_really_full_disk_is_one_line_exit_2_and_resume_finishes(
    tmpfs: Path, unbudgeted: Outcome
) -> None:
    """The store and the session's files on a tmpfs that fills up once cycle 1's select
    starts; whatever write meets the full disk first, the session stops with one line,
    and resumes to the same end once the space is back."""
    url, ballast = f"sqlite:///{tmpfs}/autodidact.db", tmpfs / "ballast"

    @contextmanager
    def filling_view() -> Iterator[Callable[[Any], None]]:
        with console_view() as shown:

            def show(event: Any) -> None:
                if event.key == "c1/select/0" and not ballast.exists():
                    fill_disk(ballast)
                shown(event)

            yield show

    where = ["--store", url, "--root", str(tmpfs), "--session", "full"]
    run_args = cli_args(parse_args([*where, *(a for s in SETS for a in ("--set", s))]))
    result = CliRunner().invoke(make_app(stand_in_loaders(), view=filling_view), run_args)
    assert ballast.exists(), "the disk filled during the session"
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no space left on the device")
    assert f"autodidact resume full --store {url} --root {tmpfs}" in line

    ballast.unlink()
    resumed = autodidact(["resume", "full", "--store", url, "--root", str(tmpfs)])
    assert resumed.exit_code == 0, resumed.output
    with open_store(url, tmpfs) as store:
        assert_same_session(outcome(store, "full"), unbudgeted)


def one_command_app(body: Callable[[], None]) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("go")(cli_command(body))
    app.command("other")(lambda: None)  # two commands: `go` is a subcommand
    return app


def test_any_command_hitting_a_full_disk_is_one_line_exit_2() -> None:
    def write() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/probe/roc.json")

    result = CliRunner().invoke(one_command_app(write), ["go"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: no space left on the device (writing /runs/probe/roc.json): "
        "free some space and run it again"
    ]


def test_another_os_error_is_not_taken_for_a_full_disk() -> None:
    def write() -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    result = CliRunner().invoke(one_command_app(write), ["go"])
    assert result.exit_code == 1
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EIO
