"""Storage benchmark: checkpoint put/get latency, event append throughput, read latency;
resume time after a kill; the store's share of a session's wall time.

    python -m benchmarks.storage [--redis-url redis://127.0.0.1:6379/0] [--checkpoints 300]
        [--no-sessions]

Runs against a SQLite file in a temp folder and, when a Redis URL is given (default:
$AUTODIDACT_TEST_REDIS_URL), against that Redis; `bash scripts/with-redis.sh
.venv/bin/python -m benchmarks.storage` starts a throwaway one. Checkpoints look like a
session's state a few cycles in (history, decisions, plans, versions). Everything written
is deleted afterwards (Redis: the benchmark's own keys). Prints markdown tables.

Sessions (skipped with --no-sessions) are the tiny session of the tests (random 2-layer
Llama, tests/session_worker.py): one is `kill -9`ed as optimize starts and resumed, first
with the CLI in a new process (interpreter, imports and model load included; killed again
at its first node_start), then in this process (engine already built: checkpoint read,
graph build, scheduling), each time to the first node_start the resume emits. Another
runs whole with the checkpointer and event log timed; their sum over the session's wall
time is the store's share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

# This file is itself named `storage`: run as a script, its folder comes first on sys.path
# and `import storage` would import this file. Put the repository root there instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

from storage import Event, Store, default_store_url, open_store  # noqa: E402
from storage.layout import SessionLayout  # noqa: E402

CHANGED_PER_STEP = ("cycle", "status", "history", "decisions")


def session_state(cycles: int) -> dict[str, Any]:
    """Channel values of a session `cycles` cycles in (plain data, a few KB)."""
    metrics = {"accuracy": 0.61, "hallucination_rate": 0.22, "abstention": 0.05, "auroc": 0.81}
    relative = SessionLayout(Path())
    return {
        "session_id": "bench",
        "task": "capitals",
        "model": "smollm2-135m-instruct",
        "cycle": cycles,
        "current_version": f"v{cycles}",
        "best_version": f"v{cycles}",
        "versions": {  # paths relative to the session's folder
            f"v{i}": {
                "name": f"v{i}",
                "path": relative.merged(f"v{i}").as_posix(),
                "parent": f"v{i - 1}",
            }
            for i in range(cycles + 1)
        },
        "thresholds": {"abstain": 0.7, "route": 0.4, "best_of_n": 0.5},
        "train": {"lr": 2e-4, "epochs": 1, "lora_r": 8, "method": "sft"},
        "history": [{"cycle": i, **metrics} for i in range(cycles)],
        "decisions": [
            {"cycle": i, "action": "loop", "reason": "accuracy improved by 0.03 on dev"}
            for i in range(cycles)
        ],
        "plans": [
            {"stage": stage, "cycle": i, "proposal": {"k": 4, "n": 64}, "reason": "rules"}
            for i in range(cycles)
            for stage in ("acquire", "select", "optimize")
        ],
        "status": "running",
    }


def next_checkpoint(previous: Checkpoint, step: int) -> tuple[Checkpoint, dict[str, int]]:
    """The next checkpoint and the channel versions it bumps (a few channels per step)."""
    values = session_state(cycles=5)
    values["cycle"] = step
    versions: dict[str, int] = {k: int(v) for k, v in previous["channel_versions"].items()}
    versions = versions or {name: 1 for name in values}
    new_versions = {name: versions[name] + 1 for name in CHANGED_PER_STEP}
    checkpoint: Checkpoint = {
        **empty_checkpoint(),
        "id": str(uuid6(clock_seq=step)),
        "channel_values": values,
        "channel_versions": dict[str, str | int | float](versions | new_versions),
        "versions_seen": {"monitor": dict(versions)},
    }
    return checkpoint, new_versions if step else versions


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_checkpoints(store: Store, thread_id: str, n: int) -> dict[str, tuple[float, float]]:
    saver = store.checkpointer
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    checkpoint, puts, gets = empty_checkpoint(), [], []
    for step in range(n):
        checkpoint, new_versions = next_checkpoint(checkpoint, step)
        metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
        started = time.perf_counter()
        config = saver.put(config, checkpoint, metadata, dict(new_versions))
        saver.put_writes(config, [("history", {"cycle": step})], task_id=f"task-{step}")
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        saver.get_tuple({"configurable": {"thread_id": thread_id}})
        gets.append(time.perf_counter() - started)
    saver.delete_thread(thread_id)
    return {"put": percentiles(puts), "get": percentiles(gets)}


def event(session_id: str, i: int) -> Event:
    return Event(
        session_id=session_id,
        key=f"c{i // 50}/acquire/{i}",
        ts=time.time(),
        kind="action",
        node="acquire",
        cycle=i // 50,
        message=f"sampled 4 answers for item {i}",
        data={"item": i, "risk": 0.31, "answers": ["Paris", "Paris", "Lyon", "Paris"]},
    )


def follow_lag(store: Store, session_id: str, n: int, poll_s: float) -> tuple[float, float]:
    """Append -> seen by `follow` in another thread, in ms (p50, p99)."""
    sent: dict[str, float] = {}
    lags: list[float] = []
    done = threading.Event()
    after = len(store.events.read(session_id))

    def consume() -> None:
        for e in store.events.follow(session_id, after, poll_s=poll_s, stop=done.is_set):
            lags.append(time.perf_counter() - sent[e.key])

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        time.sleep(0.05)
        e = event(session_id, 10**6 + i)
        sent[e.key] = time.perf_counter()
        store.events.append(e)
    deadline = time.monotonic() + poll_s * 4 + 2
    while len(lags) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    consumer.join()
    return percentiles(lags)


def bench_events(store: Store, session_id: str, n: int, poll_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    for i in range(n):
        store.events.append(event(session_id, i))
    rate = n / (time.perf_counter() - started)
    replays = [event(session_id, i) for i in range(200)]
    replay = [timed(lambda e=e: store.events.append(e)) for e in replays]  # type: ignore[misc]
    read_all = [timed(lambda: store.events.read(session_id)) for _ in range(20)]
    read_tail = [timed(lambda: store.events.read(session_id, n - 10)) for _ in range(200)]
    return {
        "append/s": rate,
        "replay": percentiles(replay),
        "read_all": percentiles(read_all),
        "read_tail": percentiles(read_tail),
        "follow": follow_lag(store, session_id, 20, poll_s),
    }


def cleanup_redis_events(store: Store, session_id: str) -> None:
    client = getattr(store.events, "client", None)
    if client is not None:
        prefix = store.events.prefix  # type: ignore[attr-defined]
        client.delete(f"{prefix}:{{{session_id}}}:events", f"{prefix}:{{{session_id}}}:keys")


# --------------------------------------------------------------------------- sessions


def cycle_nodes(
    edges: Iterable[tuple[str, str]], first: str = "acquire", last: str = "monitor"
) -> set[str]:
    """The nodes one improvement cycle runs: every node reachable from the cycle's first
    node without going past its last (whose routes start the next cycle or end the
    session).

    >>> edges = [("__start__", "fit"), ("fit", "acquire"), ("acquire", "train"),
    ...          ("acquire", "monitor"), ("train", "monitor"), ("monitor", "acquire"),
    ...          ("monitor", "finalize"), ("finalize", "__end__")]
    >>> sorted(cycle_nodes(edges))
    ['acquire', 'monitor', 'train']
    """
    successors: dict[str, set[str]] = {}
    for source, target in edges:
        successors.setdefault(source, set()).add(target)
    reached, frontier = {first}, [first]
    while frontier:
        node = frontier.pop()
        for target in successors.get(node, set()) if node != last else set():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    return reached


def session_nodes(edges: Sequence[tuple[str, str]], cycles: int) -> int:
    """Nodes a session of `cycles` cycles runs: each cycle's nodes once per cycle, every
    other node of the graph (fit_probe_on_answers, baseline, finalize) once.

    >>> session_nodes([("__start__", "fit"), ("fit", "acquire"), ("acquire", "monitor"),
    ...                ("monitor", "acquire"), ("monitor", "finalize")], cycles=4)
    10
    """
    nodes = {n for edge in edges for n in edge} - {"__start__", "__end__"}
    per_cycle = cycle_nodes(edges)
    return len(nodes - per_cycle) + cycles * len(per_cycle)


def default_session_shape(edges: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A default session that runs all its cycles: its cycles, nodes and wall budget (s)."""
    from graph.policy import resolve_policy

    monitor = resolve_policy("default").monitor
    return {
        "default_cycles": monitor.max_cycles,
        "default_nodes": session_nodes(edges, monitor.max_cycles),
        "default_s": monitor.max_wall_minutes * 60,
    }


def forget_session(store: Store, session_id: str) -> None:
    """Delete a benchmark session's checkpoints, events and registry row (Redis only)."""
    client = getattr(store.events, "client", None)
    if client is not None:
        store.checkpointer.delete_thread(session_id)
        cleanup_redis_events(store, session_id)
        client.hdel(f"{store.events.prefix}:sessions", session_id)  # type: ignore[attr-defined]


def resume_in_process(store: Store, session_id: str) -> float:
    """Seconds from `Session.run(resume=True)` to its first node_start (engine already
    built); the session then runs to its end."""
    from graph.policy import SessionPolicy
    from graph.session import Session
    from tests.session_support import coin_flip_task
    from tests.tiny_models import tiny_engine

    saved = SessionLayout.of(store.root, session_id).policy
    policy = SessionPolicy.model_validate_json(saved.read_text())
    session = Session(session_id, policy, store, coin_flip_task(), tiny_engine())
    starts: list[float] = []

    def note_node_start(event: Event) -> None:
        if event.kind == "node_start":
            starts.append(time.perf_counter())

    started = time.perf_counter()
    state = session.run(resume=True, on_event=note_node_start)
    if state.get("status") != "finished" or not starts:
        raise RuntimeError(f"the resumed session {session_id} did not finish")
    return starts[0] - started


def first_node_start(path: Path, worker: Any, timeout_s: float = 120) -> Event:
    """The first node_start a worker wrote with --events-out."""
    from tests.session_worker import read_events

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in read_events(path) if e.kind == "node_start"]
        if found:
            return found[0]
        if worker.proc.poll() is not None:
            raise RuntimeError(f"resume ended without a node_start:\n{worker.output()}")
        time.sleep(0.02)
    raise RuntimeError("no node_start from the resume")


def bench_resume(url: str, root: Path) -> dict[str, float]:
    """Kill a tiny session as optimize starts; resume it with the CLI in a new process
    and kill that too at its first node_start; then resume it in this process to the end."""
    from tests.session_worker import launch, wait_for_key

    session_id = f"bench-resume-{uuid.uuid4().hex[:8]}"
    first = launch(url, root, session_id)
    with open_store(url, root) as store:
        try:
            wait_for_key(store.events, session_id, "c1/optimize/0", first)
            first.kill()
            events_out = root / f"{session_id}.resumed.jsonl"
            started = time.time()
            second = launch(url, root, session_id, resume=True, events_out=events_out)
            cli = first_node_start(events_out, second).ts - started
            second.kill()
            return {"resume_cli": cli, "resume_in_process": resume_in_process(store, session_id)}
        finally:
            forget_session(store, session_id)


class StoreTimer:
    """Wraps an object's methods in place; sums the seconds spent in them (any thread)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def wrap(self, target: Any, names: tuple[str, ...]) -> None:
        for name in names:
            setattr(target, name, self._timed(getattr(target, name)))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1

        return timed_call


def warm_up(root: Path) -> None:
    """One unmeasured tiny session: lazy imports and first-call costs (TRL, sklearn)
    would otherwise land in the first measured session's wall time."""
    from tests.session_support import run_tiny_session

    folder = root / "warm-up"
    with open_store(default_store_url(folder), folder) as store:
        run_tiny_session(store, "warm-up")


def bench_share(url: str, root: Path) -> dict[str, float]:
    """A whole tiny session with the checkpointer and event log timed."""
    from graph.session import Session
    from tests.session_support import coin_flip_task, tiny_policy
    from tests.tiny_models import tiny_engine

    session_id = f"bench-share-{uuid.uuid4().hex[:8]}"
    with open_store(url, root) as store:
        timer = StoreTimer()
        timer.wrap(store.checkpointer, ("put", "put_writes", "get_tuple", "list"))
        timer.wrap(store.events, ("append", "read", "put_session", "get_session"))
        session = Session(session_id, tiny_policy(), store, coin_flip_task(), tiny_engine())
        edges = [(e.source, e.target) for e in session.graph().get_graph().edges]
        shape = default_session_shape(edges)
        events: list[Event] = []
        try:
            started = time.perf_counter()
            session.run(on_event=events.append)
            wall = time.perf_counter() - started
        finally:
            forget_session(store, session_id)
    nodes = sum(e.kind == "node_start" for e in events)
    per_node = timer.seconds / nodes
    return {
        "store_s": timer.seconds,
        "calls": timer.calls,
        "wall_s": wall,
        "nodes": nodes,
        "share": timer.seconds / wall,
        "per_node_ms": per_node * 1e3,
        **shape,
        "default_share": per_node * shape["default_nodes"] / shape["default_s"],
    }


def print_session_table(results: dict[str, dict[str, Any]]) -> None:
    shape = next(iter(results.values()))
    print(
        "\ntiny session (tests/session_worker.py); resume: kill -9 as c1 optimize starts, "
        "time to the resume's first node_start. Projected share: the same store time per "
        f"node for a default session ({shape['default_nodes']} nodes: its "
        f"{shape['default_cycles']} cycles counted on the graph; "
        f"{shape['default_s'] / 60:.0f} min budget)\n"
    )
    print(
        "| backend | resume, CLI (new process) | resume, in process | store time / session "
        "(calls) | session wall | store share | store per node | projected share, default |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['resume_cli']:.2f} s | {r['resume_in_process'] * 1e3:.0f} ms "
            f"| {r['store_s'] * 1e3:.0f} ms ({r['calls']}) | {r['wall_s']:.1f} s "
            f"| {r['share']:.2%} | {r['per_node_ms']:.1f} ms | {r['default_share']:.3%} |"
        )


def run_backend(url: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    session_id = f"bench-{uuid.uuid4().hex[:8]}"
    with open_store(url, root) as store:
        try:
            return bench_checkpoints(store, session_id, args.checkpoints) | bench_events(
                store, session_id, args.events, args.poll_s
            )
        finally:
            cleanup_redis_events(store, session_id)


def fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f} / {pair[1]:.2f}"


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\ncheckpoints={args.checkpoints} (state of a 5-cycle session), events={args.events}, "
        f"follow poll_s={args.poll_s}; latencies in ms as p50 / p99\n"
    )
    print(
        "| backend | checkpoint put+writes | checkpoint get | event append (events/s) "
        "| re-append (dup key) | read all events | read last 10 | follow lag |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {fmt(r['put'])} | {fmt(r['get'])} | {r['append/s']:,.0f} "
            f"| {fmt(r['replay'])} | {fmt(r['read_all'])} | {fmt(r['read_tail'])} "
            f"| {fmt(r['follow'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("AUTODIDACT_TEST_REDIS_URL"))
    parser.add_argument("--checkpoints", type=int, default=300)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument(
        "--no-sessions", action="store_true", help="skip the tiny-session measurements"
    )
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite (file, WAL)": default_store_url(tmp)}
        if args.redis_url:
            urls["redis"] = args.redis_url
        else:
            print("no --redis-url (or AUTODIDACT_TEST_REDIS_URL): Redis skipped")
        if not args.no_sessions:
            warm_up(Path(tmp))
        for name, url in urls.items():
            results[name] = run_backend(url, Path(tmp), args)
            if not args.no_sessions:
                sessions[name] = bench_resume(url, Path(tmp)) | bench_share(url, Path(tmp))
    print_table(results, args)
    if sessions:
        print_session_table(sessions)


if __name__ == "__main__":
    main()
