"""Run or resume one tiny session through the CLI's own code path, in a process of its own
(so a test can `kill -9` it, or kill the Redis under it).

    python tests/session_worker.py --store URL --root DIR --session ID [--resume]
        [--events-out FILE] [--set key=value ...] [--die-after-version]
        [--slow-checkpoints SECONDS] [--stall-before-version SECONDS]
        [--kill-at NAME[:N] --kill-marker FILE] [--moments-out FILE]

It is `autodidact run --policy FILE` / `autodidact resume ID` with two stand-ins: the tiny
random Llama of tests/tiny_models.py for the policy's model (seeded, so every process
builds the same one) and the coin-flip task of tests/session_support.py for its task, with the
tiny policy of that test. Everything else is the CLI's: opening the store, the session,
the console view, one-line errors and exit codes.

--events-out FILE: every event the session emits in this process (progress included) is
appended there as one JSON line, flushed at once: what this process did, beside what the
log kept. --die-after-version: SIGKILL this process right after the first trained model
version is renamed into place, before its node is checkpointed. --slow-checkpoints S:
every checkpoint put waits S seconds first, so a node that started before the previous
checkpoint was written would show (and a session lasts long enough to follow).
--stall-before-version S: optimize waits S seconds before it saves the first trained
version, so a signal sent once `c1/optimize/0` is logged lands mid-node.

--kill-at NAME[:N] --kill-marker FILE: SIGKILL this process the N-th time it reaches the
kill point NAME, after writing `NAME:N` to FILE; --moments-out FILE: every kill point
reached, in order, written there when the session ends (tests/kill_points.py lists them).

Tests start it with `launch(...)` (or fork it warm: tests/warm_workers.py) and watch the
store with `wait_for_key(...)`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(REPO / "tests"):  # run as a script: the repo root, not tests/
    sys.path[0] = str(REPO)


TIMEOUT_S = 120.0  # one tiny session, imports included, on a busy 2-core machine


# ---------------------------------------------------------------- the test side


class Process(Protocol):
    """What a test needs of a worker process: a `subprocess.Popen`, or a forked one."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass
class Worker:
    """A worker process; its stdout and stderr go to files beside its session."""

    proc: Process
    out: Path
    err: Path

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        """The exit code (negative: the signal); a worker past `timeout` is killed."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL (`kill -9`) and reap."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def launch(
    store: str,
    root: Path,
    session: str,
    *,
    resume: bool = False,
    **options: Any,
) -> Worker:
    """Start a worker running (or resuming) `session`; returns at once. `options`: those
    of `worker_args`."""
    command = [sys.executable, str(Path(__file__).resolve())]
    command += worker_args(store, root, session, resume=resume, **options)
    out, err = log_files(root, session, resume)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=worker_env(), cwd=REPO)
    return Worker(proc, out, err)


def worker_args(
    store: str,
    root: Path,
    session: str,
    *,
    resume: bool = False,
    events_out: Path | None = None,
    sets: Sequence[str] = (),
    die_after_version: bool = False,
    slow_checkpoints: float = 0.0,
    stall_before_version: float = 0.0,
    kill_at: str | None = None,
    kill_marker: Path | None = None,
    moments_out: Path | None = None,
) -> list[str]:
    """The worker's command line, after the script (see the module's docstring)."""
    args = ["--store", store, "--root", str(root), "--session", session]
    args += ["--resume"] if resume else []
    args += ["--events-out", str(events_out)] if events_out else []
    args += [arg for s in sets for arg in ("--set", s)]
    args += ["--die-after-version"] if die_after_version else []
    args += ["--slow-checkpoints", str(slow_checkpoints)] if slow_checkpoints else []
    args += ["--stall-before-version", str(stall_before_version)] if stall_before_version else []
    args += ["--kill-at", kill_at] if kill_at else []
    args += ["--kill-marker", str(kill_marker)] if kill_marker else []
    args += ["--moments-out", str(moments_out)] if moments_out else []
    return args


def log_files(root: Path, session: str, resume: bool) -> tuple[Path, Path]:
    """Fresh files for a worker's stdout and stderr, in ROOT/worker-logs."""
    logs = root / "worker-logs"
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{session}.{'resume' if resume else 'run'}.{time.monotonic_ns()}"
    return logs / f"{stem}.out", logs / f"{stem}.err"


def worker_env() -> dict[str, str]:
    """This environment, with the worker's torch threads pinned to this process's: a resume
    compared with an in-process run is bit-exact (weight hashes) only at equal thread
    counts on the same CPU."""
    import torch

    threads = str(torch.get_num_threads())
    return {
        **os.environ,
        "COLUMNS": "200",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": threads,
    }


def wait_for_key(
    events: Any, session: str, key: str, worker: Worker, timeout: float = TIMEOUT_S
) -> None:
    """Poll the event log until `key` is in it; AssertionError if the worker ends first
    (or, killed, when `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.key == key for e in events.read(session)):
            return
        if worker.proc.poll() is not None:
            raise AssertionError(
                f"worker ended ({worker.proc.returncode}) before {key}:\n{worker.output()}"
            )
        time.sleep(0.02)
    worker.kill()
    raise AssertionError(f"no event {key} within {timeout} s:\n{worker.output()}")


def read_events(path: Path) -> list[Any]:
    """The events a worker wrote with --events-out, progress left out."""
    from storage import Event

    if not path.exists():
        return []
    events = [Event.model_validate_json(line) for line in path.read_text().splitlines() if line]
    return [e for e in events if e.kind != "progress"]


WALL_TIMES = frozenset(
    {"seconds", "eval_seconds", "scoring_seconds", "sampling_seconds"}
)  # differ between any two runs


@dataclass(frozen=True)
class Outcome:
    """What a finished session decided and produced, free of times and session ids."""

    keys: list[str]  # event keys, in log order
    decisions: list[tuple[str, str, bool]]  # (action, reason, promote)
    history: list[dict[str, Any]]  # CycleMetrics, wall time left out
    hashes: dict[str, str]  # datasets (manifest sha256) and weight files (sha256), by path:
    # bit-exact only between runs at equal torch threads on one CPU (worker_env pins them)
    status: str | None  # in the sessions registry


def assert_same_session(resumed: Outcome, reference: Outcome) -> None:
    """A resumed session ended as the uninterrupted `reference` did."""
    assert resumed.status == "finished"
    assert resumed.keys == reference.keys, "events missing, extra or out of order"
    assert resumed.decisions == reference.decisions
    assert resumed.history == reference.history
    assert resumed.hashes == reference.hashes, "datasets or model weights differ"


def checkpoint_values(store: Any, session: str) -> dict[str, Any]:
    """Channel values of the session's latest checkpoint ({} when there is none)."""
    saved = store.checkpointer.get_tuple({"configurable": {"thread_id": session}})
    return dict(saved.checkpoint["channel_values"]) if saved else {}


def outcome(store: Any, session: str) -> Outcome:
    import hashlib

    from storage import ArtifactStore
    from storage.layout import SessionLayout

    values = checkpoint_values(store, session)
    folder = SessionLayout.of(store.root, session).folder
    hashes = {a.name: a.sha256 for a in ArtifactStore(folder).entries() if a.kind == "jsonl"}
    for weights in sorted(folder.glob("**/*.safetensors")):
        hashes[weights.relative_to(folder).as_posix()] = hashlib.sha256(
            weights.read_bytes()
        ).hexdigest()
    info = store.events.get_session(session)
    return Outcome(
        keys=[e.key for e in store.events.read(session)],
        decisions=[(d.action, d.reason, d.promote) for d in values.get("decisions", [])],
        history=[h.model_dump(exclude=set(WALL_TIMES)) for h in values.get("history", [])],
        hashes=hashes,
        status=info.status if info else None,
    )


# ---------------------------------------------------------------- the worker side


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="store URL (sqlite:///... or redis://...)")
    parser.add_argument("--root", required=True, type=Path, help="sessions folder")
    parser.add_argument("--session", required=True, help="session id")
    parser.add_argument("--resume", action="store_true", help="resume instead of run")
    parser.add_argument("--events-out", type=Path, help="append emitted events here (JSONL)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--die-after-version", action="store_true")
    parser.add_argument(
        "--slow-checkpoints", type=float, default=0.0, help="seconds each checkpoint put waits"
    )
    parser.add_argument(
        "--stall-before-version", type=float, default=0.0, help="seconds before v1 is saved"
    )
    parser.add_argument("--kill-at", help="NAME[:N]: SIGKILL at the N-th time NAME is reached")
    parser.add_argument("--kill-marker", type=Path, help="NAME:N written here just before")
    parser.add_argument("--moments-out", type=Path, help="kill points reached, in order (JSON)")
    return parser.parse_args(argv)


def cli_args(args: argparse.Namespace) -> list[str]:
    """The `autodidact` command line this worker stands for."""
    from tests.session_support import tiny_policy

    where = ["--store", args.store, "--root", str(args.root)]
    if args.resume:
        return ["resume", args.session, *where]
    sets = dict(s.split("=", 1) for s in args.sets)
    policy_file = args.root / f"{args.session}.policy.yaml"
    args.root.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(json.dumps(tiny_policy(**sets).model_dump(mode="json")))
    return ["run", "--policy", str(policy_file), "--session-id", args.session, *where]


def stand_in_loaders() -> Any:
    """The CLI's loaders with the tiny engine and the coin-flip task in place of the
    policy's model and task."""
    from cli.common import Loaders
    from tests.session_support import coin_flip_task
    from tests.tiny_models import tiny_engine

    return Loaders(
        load_engine=lambda model: tiny_engine(),
        load_task=lambda name, path: coin_flip_task(),
        load_cluster_engine=tiny_cluster_engine,
    )


def tiny_cluster_engine(model: str, cluster: Any) -> Any:
    """The tiny engine's model on Ray generation actors (`cluster.backend=ray`), with the
    tiny engine's batch size, so it generates what the tiny engine does."""
    from engines.cluster import ClusterEngine, PoolOptions
    from tests.cluster_support import tiny_model_folder

    resources = cluster.worker_resources
    options = PoolOptions(cluster.generation_workers, resources.CPU, 0.0, batch_size=8)
    return ClusterEngine.load(str(tiny_model_folder()), options, address=cluster.address)


def stand_in_app(args: argparse.Namespace) -> Any:
    """The CLI's app with the stand-in loaders, the event tap, the kill and the slow
    checkpoints."""
    from cli.app import make_app
    from cli.view import console_view

    view = console_view if args.events_out is None else tapped_view(console_view, args.events_out)
    if args.die_after_version:
        die_after_first_version()
    if args.slow_checkpoints:
        slow_checkpoints(args.slow_checkpoints)
    if args.stall_before_version:
        stall_before_first_version(args.stall_before_version)
    return make_app(stand_in_loaders(), view=view)


def tapped_view(console_view: Any, out: Path) -> Any:
    """`console_view`, with every event also appended to `out` as a JSON line."""

    @contextmanager
    def view() -> Iterator[Any]:
        with console_view() as shown, out.open("a") as handle:

            def tap(event: Any) -> None:
                handle.write(event.model_dump_json() + "\n")
                handle.flush()
                shown(event)

            yield tap

    return view


def die_after_first_version() -> None:
    import agents.optimize

    save = agents.optimize._save_version

    def save_then_die(*args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    agents.optimize._save_version = save_then_die


def stall_before_first_version(seconds: float) -> None:
    """The first version's save waits `seconds` first (a sleep a signal interrupts)."""
    import agents.optimize

    save = agents.optimize._save_version
    stalled: list[bool] = []

    def stall_then_save(*args: Any, **kwargs: Any) -> None:
        if not stalled:
            stalled.append(True)
            time.sleep(seconds)
        save(*args, **kwargs)

    agents.optimize._save_version = stall_then_save


def slow_checkpoints(seconds: float) -> None:
    """Every checkpoint put waits `seconds` first: a slow store, or a kill that lands
    while a checkpoint is still being written."""
    import storage.store

    def slowed(make_saver: Any) -> Any:
        def make(*args: Any, **kwargs: Any) -> Any:
            saver = make_saver(*args, **kwargs)
            put = saver.put

            def slow_put(*put_args: Any, **put_kwargs: Any) -> Any:
                time.sleep(seconds)
                return put(*put_args, **put_kwargs)

            saver.put = slow_put
            return saver

        return make

    storage.store.sqlite_saver = slowed(storage.store.sqlite_saver)
    storage.store.redis_saver = slowed(storage.store.redis_saver)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = cli_args(args)
    points = None
    if args.kill_at or args.moments_out:
        from tests import kill_points

        points = kill_points.install(args.kill_at, args.kill_marker)
    try:
        stand_in_app(args)(command, prog_name="autodidact")
    finally:
        if points is not None and args.moments_out:
            args.moments_out.write_text(json.dumps(points.reached))


if __name__ == "__main__":
    main()
