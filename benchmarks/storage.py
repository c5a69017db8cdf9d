"""Storage benchmark: checkpoint put/get latency, event append throughput, read latency.

    python benchmarks/storage.py [--redis-url redis://127.0.0.1:6379/0] [--checkpoints 300]

Runs against a SQLite file in a temp folder and, when a Redis URL is given (default:
$AUTODIDACT_TEST_REDIS_URL), against that Redis; `bash scripts/with-redis.sh
.venv/bin/python benchmarks/storage.py` starts a throwaway one. Checkpoints look like a
session's state a few cycles in (history, decisions, plans, versions). Everything written
is deleted afterwards. Prints one markdown table.
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
from collections.abc import Callable
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

CHANGED_PER_STEP = ("cycle", "status", "history", "decisions")


def session_state(cycles: int) -> dict[str, Any]:
    """Channel values of a session `cycles` cycles in (plain data, a few KB)."""
    metrics = {"accuracy": 0.61, "hallucination_rate": 0.22, "abstention": 0.05, "auroc": 0.81}
    return {
        "session_id": "bench",
        "task": "capitals",
        "model": "smollm2-135m-instruct",
        "cycle": cycles,
        "current_version": f"v{cycles}",
        "best_version": f"v{cycles}",
        "versions": {
            f"v{i}": {"name": f"v{i}", "path": f"versions/v{i}/merged", "parent": f"v{i - 1}"}
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
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite (file, WAL)"] = run_backend(default_store_url(tmp), Path(tmp), args)
        if args.redis_url:
            results["redis"] = run_backend(args.redis_url, Path(tmp), args)
        else:
            print("no --redis-url (or AUTODIDACT_TEST_REDIS_URL): Redis skipped")
    print_table(results, args)


if __name__ == "__main__":
    main()
