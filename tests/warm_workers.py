"""Session workers forked from one warm parent process.

A worker started afresh (tests/session_worker.py) spends some 8 s of CPU importing torch,
transformers, TRL and the rest before its tiny session runs for about 3 s; a sweep of
dozens of kills, each followed by a resume, cannot pay that twice per kill. `WarmWorkers`
starts one parent that imports all of it once, then forks every worker from it: each a
process of its own with the worker's own command line, killed for real. The parent only
imports (it runs no model, opens no store, starts no thread of its own), so each child
starts from the state a fresh process would reach after its imports.

    python tests/warm_workers.py    # the parent: one JSON request a line on stdin

A request is {"argv": [...], "out": FILE, "err": FILE}: the parent forks a child that
runs `session_worker.main(argv)` with its stdout and stderr in those files, answers
{"pid": PID}, waits for it, and answers {"pid": PID, "code": EXIT} (negative: the signal).
One child at a time.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(REPO / "tests"):  # run as a script: the repo root, not tests/
    sys.path[0] = str(REPO)

from tests.session_worker import TIMEOUT_S, Worker, log_files, worker_args, worker_env  # noqa: E402

WARM_MODULES = (
    "cli.app",
    "cli.view",
    "tests.session_worker",
    "tests.kill_points",
    "tests.session_support",
    "tests.tiny_models",
    "engines.hf",
    "agents.optimize",
    "trl",
    "peft",
    "transformers.models.llama.modeling_llama",
)
START_S = 300.0  # the parent's imports on a busy 2-core machine


# ---------------------------------------------------------------- the test side


@dataclass
class Forked:
    """A forked worker, as a test sees it (`session_worker.Process`)."""

    parent: WarmWorkers
    pid: int

    @property
    def returncode(self) -> int | None:
        return self.parent.codes.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self.parent.ended:
            if not self.parent.ended.wait_for(lambda: self.pid in self.parent.codes, timeout):
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            return self.parent.codes[self.pid]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


class WarmWorkers:
    """The warm parent; `launch` is `session_worker.launch`, forked."""

    def __init__(self, log: Path) -> None:
        self.codes: dict[int, int] = {}
        self.ended = threading.Condition()
        self._started: list[int] = []
        self._pids: queue.Queue[int | str] = queue.Queue()
        self._log = log.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=worker_env(),
            cwd=REPO,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._expect("ready", START_S)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            reply = json.loads(line)
            if reply == "ready":
                self._pids.put(reply)
            elif "code" in reply:
                with self.ended:
                    self.codes[reply["pid"]] = reply["code"]
                    self.ended.notify_all()
            else:
                self._pids.put(reply["pid"])
        self._pids.put("ended")

    def _expect(self, what: str, timeout: float) -> int | str:
        try:
            got = self._pids.get(timeout=timeout)
        except queue.Empty:
            got = "nothing"
        if got == "ended" or got == "nothing" or (what == "ready") != (got == "ready"):
            raise AssertionError(f"warm parent: {got} instead of {what}; see {self._log.name}")
        return got

    def launch(self, store: str, root: Path, session: str, **options: Any) -> Worker:
        """Fork a worker running (or, with resume=True, resuming) `session`."""
        with self.ended:
            running = [pid for pid in self._started if pid not in self.codes]
        assert not running, f"one worker at a time: {running} still runs"
        argv = worker_args(store, root, session, **options)
        out, err = log_files(root, session, bool(options.get("resume")))
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"argv": argv, "out": str(out), "err": str(err)}) + "\n")
        self._proc.stdin.flush()
        pid = int(self._expect("pid", TIMEOUT_S))
        self._started.append(pid)
        return Worker(Forked(self, pid), out, err)

    def __enter__(self) -> WarmWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the parent (it ends on stdin's end, once its child has)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(TIMEOUT_S)
        self._log.close()


# ---------------------------------------------------------------- the parent side


def serve() -> None:
    """Import, say ready, then fork one worker per request line until stdin ends."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a stray print of an import must not reach the replies
    for module in WARM_MODULES:
        importlib.import_module(module)
    _reply(replies, "ready")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, replies)
        _reply(replies, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        _reply(replies, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _reply(replies: IO[str], reply: Any) -> None:
    replies.write(json.dumps(reply) + "\n")
    replies.flush()


def _child(request: dict[str, Any], replies: IO[str]) -> NoReturn:
    code = 1
    try:
        replies.close()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        from tests.session_worker import main

        main(request["argv"])
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    serve()
