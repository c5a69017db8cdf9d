"""How a running session stops without losing anything. Ctrl-C (SIGINT) or SIGTERM:
the session is recorded `interrupted`, one line says how to resume, and the process ends
at once, as `kill -9` would (the graph's node runs in a worker thread that an exception in
the main thread would wait for, and whose late writes would then reach the checkpoint
without their events). A full disk is told apart from a bug: one line, exit 2."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
LAST_WORDS_S = 10.0  # the most a signal waits for `last_words` before the process ends
FAREWELL_S = 1.0  # and then for the farewell, when the last words did not finish
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def exit_code(signum: int) -> int:
    """The shell's code for a command ended by `signum`.

    >>> exit_code(signal.SIGINT), exit_code(signal.SIGTERM)
    (130, 143)
    """
    return 128 + signum


def stop_line(signum: int, hint: str) -> str:
    """The one line printed when a signal stops a session.

    >>> stop_line(signal.SIGTERM, "`autodidact resume s1`")
    'terminated (SIGTERM): `autodidact resume s1` continues from the last completed step'
    """
    what = (
        "interrupted (Ctrl-C)"
        if signum == signal.SIGINT
        else f"terminated ({signal.Signals(signum).name})"
    )
    return f"{what}: {hint} continues from the last completed step"


Said = Callable[[int], None]  # given the signal's number


@contextmanager
def ending_on_signals(last_words: Said, farewell: Said) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM end the process at once with `exit_code(signum)`,
    skipping all cleanup, once `last_words(signum)` and then `farewell(signum)` (what must
    be said even so) ran. Both run in the main thread, paused in the handler wherever the
    signal found it: a reentrant lock it holds there (the stores') lets the last words
    through, where a thread of their own would wait on it. A watchdog bounds them: after
    LAST_WORDS_S it says the farewell itself and ends the process (a lock that is not
    reentrant, or one another thread keeps). The previous handlers are back on the way
    out. Outside the main thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _ender(last_words, farewell)
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _ender(last_words: Said, farewell: Said) -> Callable[[int, FrameType | None], None]:
    def end(signum: int, frame: FrameType | None) -> None:
        for each in SIGNALS:  # a second signal ends the process without last words
            signal.signal(each, signal.SIG_DFL)
        ending = threading.Lock()  # whoever takes it says the farewell and ends
        watchdog = threading.Thread(
            target=_end_if_stuck, args=(ending, farewell, signum), daemon=True
        )
        watchdog.start()
        _quietly(last_words, signum)
        if ending.acquire(blocking=False):
            _farewell_and_exit(farewell, signum)
        watchdog.join()  # the watchdog is ending the process

    return end


def _end_if_stuck(ending: threading.Lock, farewell: Said, signum: int) -> None:
    time.sleep(LAST_WORDS_S)
    if ending.acquire(blocking=False):
        # in a thread of its own: the stuck main thread may hold the stream's lock
        speaker = threading.Thread(target=_quietly, args=(farewell, signum), daemon=True)
        speaker.start()
        speaker.join(FAREWELL_S)
    else:  # the main thread is saying it
        time.sleep(FAREWELL_S)
    _exit(signum)


def _farewell_and_exit(farewell: Said, signum: int) -> None:
    _quietly(farewell, signum)
    _exit(signum)


def _exit(signum: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(exit_code(signum))


def _quietly(say: Said, signum: int) -> None:
    with contextlib.suppress(Exception):
        say(signum)


def disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from (the chain a traceback would show),
    means the disk (or quota) is full: an OSError ENOSPC/EDQUOT, SQLite's SQLITE_FULL, or
    a library's I/O error that only carries the OS message (safetensors: "(os error 28)").

    >>> disk_full(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> disk_full(OSError(errno.ENOENT, "No such file or directory"))
    False
    >>> disk_full(RuntimeError("I/O error: No space left on device (os error 28)"))
    True
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_disk_full(current):
            return True
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return False


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in DISK_FULL_ERRNOS
    if isinstance(error, sqlite3.OperationalError):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return f"(os error {errno.ENOSPC})" in str(error)


def disk_full_line(error: BaseException) -> str:
    """What the full disk stopped, for the one-line error.

    >>> disk_full_line(OSError(errno.ENOSPC, "No space left on device", "/runs/x.json"))
    'no space left on the device (writing /runs/x.json)'
    """
    filename = getattr(error, "filename", None)
    return "no space left on the device" + (f" (writing {filename})" if filename else "")
