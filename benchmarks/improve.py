"""The default improvement session on the default model, measured.

    python -m benchmarks.improve [--preset default] [--set key=value ...]
    python -m benchmarks.improve --compare [--seeds 0 1 2] [--tasks arithmetic hard]
                                 [--factor 3] [--cycles 2] [--set key=value ...]
                                 [--root runs/bench-improve] [--out runs/bench-compare.json]
    python -m benchmarks.improve --report runs/bench-compare.json

One session (arithmetic by default) to the monitor's stop prints: wall time; test accuracy
and hallucination rate of the initial and the final model (the initial one answers with the
same >= 96-token budget, so truncation is no handicap); every decision the monitor made and
why; and the share of wall time spent outside model compute (generation, prefill and
optimizer steps), measured by timing those calls.

`--compare` runs uniform acquisition (`acquire.candidate_factor=1`) against probe-guided
acquisition (`--factor`) for every seed and task, same seed and policy otherwise, a fixed
number of cycles with the wall-clock budget rule off (so both arms do the same work), one
session after another in this process; `hard` is 2-digit subtraction and multiplication.
It prints, per task: test accuracy of each arm, the paired difference, sampled tokens,
wasted-prompt share, the probe's AUROC on each new version's fresh dev labels beside last
cycle's probe and the mean-logprob and entropy baselines, the probe's accuracy forecast
error, and the cost of scoring the candidate pool relative to sampling; means over seeds
with 95% t-intervals, the per-seed values quoted by seed, every run's cycles, and the
ranges over them (`benchmarks.compare_report`).

Each session's record is merged into `--out` as it ends, by (task, arm, seed): a table
made in several invocations (`--seeds 0 1`, then `--seeds 2`) is one file, and a session
already in it, finished with the same settings, is skipped, so a cut run is restarted with
the same command. `--report FILE` prints the tables of every finished record in FILE.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import transformers

from agents.acquire import Attempt
from benchmarks.compare_report import (
    RunKey,
    pending,
    read_runs,
    report_lines,
    save_run,
)
from engines import load_model
from engines.hf import HFEngine
from graph.policy import resolve_policy
from graph.session import Session, new_session_id
from storage import open_store
from tasks import get_task
from tasks.base import Task

COMPUTE_SECONDS: dict[str, float] = {"generate": 0.0, "hidden_states": 0.0, "train": 0.0}


def timed(owner: Any, name: str, bucket: str) -> None:
    """Wrap `owner.name` so its wall time adds to COMPUTE_SECONDS[bucket]."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            COMPUTE_SECONDS[bucket] += time.perf_counter() - started

    setattr(owner, name, wrapper)


# the comparison's fixed schedule: the same number of cycles for both arms, whatever the
# clock says (the budget rule reads the clock), no retrains, no greedy probe refits
COMPARE_SETS = (
    "monitor.patience=99",
    "monitor.project_wall_budget=false",
    "monitor.max_wall_minutes=600",
    "monitor.max_retrains=0",
    "monitor.max_probe_refits=0",
)
# the comparison's session size: 3 seeds x 2 tasks x 2 arms in about 80 minutes on 2 cores
# (a dev split of 60 moves an AUROC by about +-0.12: the intervals say so)
COMPARE_SIZE = (
    "acquire.prompts_per_cycle=24",
    "evaluate.dev_limit=60",
    "evaluate.test_limit=60",
    "probe.items=48",
    "select.min_examples=4",
)


def compare_task(name: str) -> Task:
    """`arithmetic` (2-digit addition, the default) or `hard` (2-digit subtraction and
    multiplication: the initial model is right under 10% of the time)."""
    if name == "hard":
        return get_task("arithmetic", n=500, digits=2, operators="-*")
    return get_task(name)


def run_one(task: Task, sets: Sequence[str], root: Path) -> dict[str, Any]:
    """One session of the comparison: its report, wall time, and the session it ran (its
    id, from which its folder)."""
    policy = resolve_policy("default", None, list(sets))
    engine = load_model(policy.model)
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        session = Session(new_session_id(task.name), policy, store, task, engine)
        state = session.run()
        folder = session.folder
    final = state["final"]
    return {
        "session_id": session.session_id,
        "folder": str(folder),
        "wall_seconds": time.perf_counter() - started,
        "initial_test_accuracy": final["initial"]["test_accuracy"],
        "test_accuracy": final["final"]["test_accuracy"],
        "n_test": final["final"]["n_test"],
        "cycles": [row for row in final["cycles"] if row["cycle"] >= 1],
    }


def sampled(folder: Path, task: Task) -> list[dict[str, float]]:
    """Per cycle, from the session's own attempts (so cycles that trained nothing count
    too): tokens sampled, the share of prompts whose K samples all got one verdict, and
    the prompts with at least one right sample."""
    from agents.acquire import tokens_sampled
    from agents.selection import label_with_verifier, wasted_share
    from graph.cycle_data import read_jsonl
    from storage import ArtifactStore

    artifacts, rows = ArtifactStore(folder), []
    for cycle in range(1, 100):
        name = f"cycle-{cycle}/attempts.jsonl"
        if artifacts.manifest().find(name) is None:
            break
        attempts = [Attempt.from_row(r) for r in read_jsonl(artifacts, name)]
        labelled = label_with_verifier(task, attempts)
        rows.append(
            {
                "cycle": cycle,
                "tokens": tokens_sampled(attempts),
                "wasted": wasted_share(labelled),
                "right_prompts": sum(any(lab.correct) for lab in labelled),
            }
        )
    return rows


def compare_plan(args: argparse.Namespace) -> list[tuple[RunKey, list[str]]]:
    """Every (task, arm, seed) of this invocation with the `--set`s its session runs
    with, seeds outermost (a cut-short run still has whole pairs)."""
    schedule = [*COMPARE_SIZE, *COMPARE_SETS, f"monitor.max_cycles={args.cycles}"]
    return [
        (
            (name, arm, seed),
            [*schedule, f"seed={seed}", f"acquire.candidate_factor={factor}", *args.sets],
        )
        for seed in args.seeds
        for name in args.tasks
        for arm, factor in (("uniform", 1), ("guided", args.factor))
    ]


def compare(args: argparse.Namespace) -> None:
    """Run the sessions `--out` does not hold finished yet, merging each into it as it ends."""
    plan = compare_plan(args)
    try:
        todo = pending(plan, read_runs(args.out))
    except ValueError as error:  # another schema, or a SettingsConflict
        raise SystemExit(str(error)) from None
    if len(todo) < len(plan):
        print(f"{len(plan) - len(todo)} of {len(plan)} sessions already in {args.out}: skipped")
    for (name, arm, seed), sets in todo:
        task = compare_task(name)
        run = run_one(task, sets, args.root / f"{name}-{seed}-{arm}")
        record = {"task": name, "arm": arm, "seed": seed, "sets": sets, **run}
        record["samples"] = sampled(Path(run["folder"]), task)
        save_run(args.out, record)
        print(
            f"[{name} seed {seed} {arm}] test {run['initial_test_accuracy']:.1%} -> "
            f"{run['test_accuracy']:.1%}, {run['wall_seconds'] / 60:.1f} min; in {args.out}",
            flush=True,
        )
    print("\n".join(report_lines(read_runs(args.out))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--root", type=Path, default=Path("runs/bench-improve"))
    parser.add_argument("--compare", action="store_true", help="uniform vs probe-guided")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=["arithmetic", "hard"])
    parser.add_argument("--factor", type=int, default=3, help="guided arm's candidate_factor")
    parser.add_argument("--cycles", type=int, default=2, help="cycles per session (--compare)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compare.json"))
    parser.add_argument("--report", type=Path, help="print the tables of a saved --out file")
    args = parser.parse_args()
    if args.report:
        print("\n".join(report_lines(read_runs(args.report))))
        return
    if args.compare:
        compare(args)
        return

    timed(HFEngine, "generate", "generate")
    timed(HFEngine, "hidden_states", "hidden_states")
    timed(transformers.Trainer, "train", "train")
    policy = resolve_policy(args.preset, None, args.sets)
    task = get_task(policy.task)
    started = time.perf_counter()
    engine = load_model(policy.model)
    session_id = new_session_id(task.name)
    args.root.mkdir(parents=True, exist_ok=True)
    with open_store(f"sqlite:///{args.root}/autodidact.db", args.root) as store:
        state = Session(session_id, policy, store, task, engine).run(
            on_event=lambda e: (
                print(
                    f"  [{time.perf_counter() - started:6.0f} s] c{e.cycle} {e.node}: {e.message}"
                )
                if e.kind in ("decision", "metric", "error")
                else None
            )
        )
    wall = time.perf_counter() - started
    final = state["final"]
    compute = sum(COMPUTE_SECONDS.values())
    print(f"\nsession {session_id} (preset {args.preset}, task {task.name}, model {engine.name})\n")
    print("| measure | value |\n|---|---|")
    rows = [
        ("wall time (target <= 12 min)", f"{wall / 60:.1f} min"),
        (
            "test accuracy, initial model",
            f"{final['initial']['test_accuracy']:.1%} (n={final['initial']['n_test']})",
        ),
        (
            "test accuracy, final model",
            f"{final['final']['test_accuracy']:.1%} ({final['final']['version']})",
        ),
        (
            "gain (target >= +30 points)",
            f"{(final['final']['test_accuracy'] - final['initial']['test_accuracy']) * 100:+.1f} points",
        ),
        (
            "hallucination rate, initial -> final",
            f"{final['initial']['test_hallucination_rate']:.1%} -> {final['final']['test_hallucination_rate']:.1%}",
        ),
        (
            "truncated test answers, initial -> final",
            f"{final['initial']['test_truncated']} -> {final['final']['test_truncated']}",
        ),
        (
            "model compute: generate / prefill / train",
            " / ".join(f"{COMPUTE_SECONDS[k]:.0f} s" for k in COMPUTE_SECONDS),
        ),
        (
            "share of wall time outside model compute (target <= 3%)",
            f"{(wall - compute) / wall:.1%}",
        ),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(
        "\n| cycle | version | dev acc | halluc. | mean risk | probe AUROC | decision |\n|---|---|---|---|---|---|---|"
    )
    for row in final["cycles"]:
        risk = "-" if row["mean_risk"] is None else f"{row['mean_risk']:.3f}"
        auroc = "-" if row["probe_auroc"] is None else f"{row['probe_auroc']:.3f}"
        print(
            f"| {row['cycle']} | {row['version']} | {row['accuracy']:.1%} | {row['hallucination_rate']:.1%} | {risk} | {auroc} | {row['decision'] or ''} |"
        )
    print("\nmonitor decisions:")
    for decision in final["decisions"]:
        print(f"- cycle {decision['cycle']}: {decision['action']}: {decision['reason']}")


if __name__ == "__main__":
    main()
