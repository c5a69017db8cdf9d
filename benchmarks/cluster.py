"""The default session on the default model, in one process and on a local Ray, measured.

    python -m benchmarks.cluster [--preset default] [--cycles 1] [--workers 2]
                                 [--set key=value ...] [--root runs/bench-cluster]
                                 [--out FILE.json]

Runs the same session twice, one after the other in this process: `cluster.backend=local`,
then `cluster.backend=ray` on a Ray started here (`--workers` generation actors and
training workers, 1 CPU each). Both arms have the same fixed cycles with the wall-clock
budget rule off, no retrains and no greedy probe refits, so they do the same work. It
prints the wall time of loading the engine and of each stage (summed over the session's
node runs), the difference ray - local and its share of ray's time (Ray's overhead, where
positive), the total, and each arm's dev accuracy per version, test accuracy (initial and
final model) and decisions. Results go to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli.common import Loaders
from graph.policy import SessionPolicy, resolve_policy
from graph.session import Session, new_session_id
from storage import Event, open_store
from tasks import with_verifier

FIXED = (
    "monitor.patience=99",
    "monitor.project_wall_budget=false",
    "monitor.max_wall_minutes=600",
    "monitor.max_retrains=0",
    "monitor.max_probe_refits=0",
    "tracking=false",
)
STAGES: tuple[str, ...] = (
    "fit_probe_on_answers",
    "baseline",
    "acquire",
    "select",
    "refit_probe_on_samples",
    "optimize",
    "evaluate",
    "monitor",
    "finalize",
)


def stage_seconds(events: Sequence[Event]) -> dict[str, float]:
    """Wall seconds per node, summed over its runs, from node_start/node_end pairs.

    >>> def e(ts, kind, node):
    ...     return Event(session_id="s", seq=0, key="k", ts=ts, kind=kind, node=node,
    ...                  cycle=0, message="")
    >>> stage_seconds([e(1.0, "node_start", "fit_probe_on_answers"), e(3.5, "node_end", "fit_probe_on_answers")])
    {'fit_probe_on_answers': 2.5}
    """
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for event in events:
        if event.node is None:
            continue
        if event.kind == "node_start":
            started[event.node] = event.ts
        elif event.kind == "node_end" and event.node in started:
            seconds[event.node] = seconds.get(event.node, 0.0) + event.ts - started.pop(event.node)
    return seconds


def run_arm(policy: SessionPolicy, root: Path) -> dict[str, Any]:
    """One session of `policy` under `root`; its times, accuracies and decisions."""
    loaders = Loaders()
    task = with_verifier(loaders.load_task(policy.task, None), policy.task_verifier)
    started = time.perf_counter()
    engine = loaders.engine(policy.model, policy.engine, policy.cluster)
    load_seconds = time.perf_counter() - started
    session_id = new_session_id(f"{policy.task}-{policy.cluster.backend}")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        started = time.perf_counter()
        state = Session(session_id, policy, store, task, engine).run()
        session_seconds = time.perf_counter() - started
        stages = stage_seconds(store.events.read(session_id))
    final = state["final"]
    return {
        "backend": policy.cluster.backend,
        "load_seconds": round(load_seconds, 1),
        "session_seconds": round(session_seconds, 1),
        "stages": {name: round(seconds, 1) for name, seconds in stages.items()},
        "dev_accuracy": {h.version: h.accuracy for h in state["history"]},
        "test_accuracy": {role: final[role]["test_accuracy"] for role in ("initial", "final")},
        "test_n": final["initial"]["n_test"],
        "final_version": final["final"]["version"],
        "decisions": [f"{d.action}: {d.reason}" for d in state["decisions"]],
    }


def print_comparison(local: dict[str, Any], ray: dict[str, Any]) -> None:
    total_local = local["load_seconds"] + local["session_seconds"]
    total_ray = ray["load_seconds"] + ray["session_seconds"]
    rows = [("load engine", local["load_seconds"], ray["load_seconds"])]
    rows += [(s, local["stages"].get(s, 0.0), ray["stages"].get(s, 0.0)) for s in STAGES]
    rows += [("total", total_local, total_ray)]
    print(f"{'stage':<12}{'local s':>9}{'ray s':>9}{'ray-local':>11}{'share of ray':>14}")
    for name, a, b in rows:
        share = f"{(b - a) / b:.0%}" if b > 0 else "-"
        print(f"{name:<12}{a:>9.1f}{b:>9.1f}{b - a:>11.1f}{share:>14}")
    for arm in (local, ray):
        dev = ", ".join(f"{v} {a:.1%}" for v, a in arm["dev_accuracy"].items())
        test = arm["test_accuracy"]
        print(
            f"{arm['backend']}: dev {dev}; test (n={arm['test_n']}) initial "
            f"{test['initial']:.1%} -> final ({arm['final_version']}) {test['final']:.1%}"
        )
        for decision in arm["decisions"]:
            print(f"  {decision}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="policy preset of both arms")
    parser.add_argument("--cycles", type=int, default=1, help="fixed cycles per arm")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors and train workers")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-cluster"))
    parser.add_argument("--out", type=Path, default=None, help="results as JSON")
    args = parser.parse_args(argv)
    common = [*FIXED, f"monitor.max_cycles={args.cycles}", *args.sets]
    ray_sets = [
        "cluster.backend=ray",
        f"cluster.generation_workers={args.workers}",
        f"cluster.train_workers={args.workers}",
    ]
    arms = []
    for backend, extra in (("local", []), ("ray", ray_sets)):
        policy = resolve_policy(args.preset, None, [*common, *extra])
        arms.append(run_arm(policy, args.root / backend))
        print(json.dumps(arms[-1]), flush=True)
    print_comparison(*arms)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(arms, indent=2))


if __name__ == "__main__":
    main()
