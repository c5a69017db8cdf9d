"""The default improvement session on the default model, measured over seeds.

    python -m benchmarks.improve [--seeds 0 1 2] [--preset default] [--set key=value ...]
                                 [--root runs/bench-improve] [--out runs/bench-improve.json]
    python -m benchmarks.improve --report runs/bench-improve.json
    python -m benchmarks.improve --compare [--seeds 0 1 2] [--tasks arithmetic hard]
                                 [--factor 3] [--cycles 2] [--set key=value ...]
                                 [--root runs/bench-improve] [--out runs/bench-compare.json]
    python -m benchmarks.improve --report runs/bench-compare.json

The headline mode runs one session of `--preset` (arithmetic by default) to the monitor's
stop per seed, the seed set as `seed=N` beside the `--set`s (seeds 0 1 2 unless `--seeds`
says otherwise, so the bare command measures the README's 3-seed table; `--seeds 0` is one
session), one after another in this process, each in its own folder `--root`/PRESET-SEED.
The tables give, per seed: wall time (model load included); test accuracy and
hallucination rate of the initial and the final model (the initial one answers with the
same >= 96-token budget, so truncation is no handicap) and the truncated test answers of
each; model compute (generation, prefill and optimizer steps, measured by timing those
calls) and the share of wall time outside it; every cycle (version, dev accuracy,
hallucination, mean risk, probe AUROC, decision) and every decision the monitor made and
why. Across seeds: the mean and its 95% t-interval of wall time, initial and final test
accuracy, the gain (paired by seed), initial and final hallucination rate and the share
outside model compute.

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

Both modes merge each session's record into `--out` as it ends (default per mode:
runs/bench-improve.json for the headline, runs/bench-compare.json for `--compare`), by
(preset, seed) or (task, arm, seed): a table made in several invocations (`--seeds 0 1`,
then `--seeds 2`) is one file, and a session already in it, finished with the same
settings, is skipped, so a cut run is restarted with the same command (one finished with
other settings is refused before anything runs). The file names its kind, and
`--report FILE` prints the tables of every finished record in FILE, headline or
comparison as the file says. The seed is set by `--seeds` only (`--set seed=` is refused).

Measure the README's table in the background, then print it:

    nohup .venv/bin/python -m benchmarks.improve --seeds 0 1 2 > runs/bench-improve.log 2>&1 &
    .venv/bin/python -m benchmarks.improve --report runs/bench-improve.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import transformers

from agents.acquire import Attempt
from benchmarks.compare_report import (
    COMPARE,
    IMPROVE,
    KINDS,
    METHODS,
    FileKind,
    HeadlineKey,
    RunKey,
    headline_report_lines,
    read_results,
    read_runs,
    save_run,
    still_to_run,
)
from benchmarks.compare_report import file_report_lines as compare_file_report_lines
from benchmarks.methods_report import METHOD_ARMS, methods_report_lines
from engines import load_model
from engines.hf import HFEngine
from graph.events import NodeEnd, payload
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
        events = store.events.read(session.session_id)
    final = state["final"]
    return {
        "session_id": session.session_id,
        "folder": str(folder),
        "wall_seconds": time.perf_counter() - started,
        "initial_test_accuracy": final["initial"]["test_accuracy"],
        "test_accuracy": final["final"]["test_accuracy"],
        "n_test": final["final"]["n_test"],
        "initial_dev_accuracy": final["initial"]["dev_accuracy"],
        "dev_accuracy": final["final"]["dev_accuracy"],
        "cycles": [row for row in final["cycles"] if row["cycle"] >= 1],
        "optimize_seconds": [
            ended.seconds
            for e in events
            if e.node == "optimize" and isinstance(ended := payload(e), NodeEnd)
        ],
    }


def sampled(folder: Path, task: Task) -> list[dict[str, float]]:
    """Per cycle, from the session's own attempts (so cycles that trained nothing count
    too): tokens sampled, the share of prompts whose K samples all got one verdict, and
    the prompts with at least one right sample."""
    from agents.acquire import tokens_sampled
    from agents.selection import label_with_verifier, wasted_share
    from graph.cycle_data import read_jsonl
    from storage import ArtifactStore
    from storage.layout import SessionLayout

    artifacts, rows = ArtifactStore(folder), []
    for cycle in range(1, 100):
        name = SessionLayout.attempts_name(cycle)
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


def methods_plan(args: argparse.Namespace) -> list[tuple[RunKey, list[str]]]:
    """Every (task, method arm, seed) of this invocation with its `--set`s: the
    comparison's size and fixed schedule, the arm's method and prompt order."""
    schedule = [*COMPARE_SIZE, *COMPARE_SETS, f"monitor.max_cycles={args.cycles}"]
    return [
        ((name, arm, seed), [*schedule, f"seed={seed}", *METHOD_ARMS[arm], *args.sets])
        for seed in args.seeds
        for name in args.tasks
        for arm in args.arms
    ]


def compare(args: argparse.Namespace, kind: FileKind = COMPARE) -> None:
    """Run the sessions `--out` does not hold finished yet, each in a process of its own
    (a session's memory stays with it), merging each into `--out` as it ends."""
    plan = methods_plan(args) if kind is METHODS else compare_plan(args)
    todo = still_to_run(plan, args.out, kind)
    for key, sets in todo:
        exit_code = in_own_process(run_and_save, key, sets, args.root, args.out, kind.name)
        if exit_code != 0:
            raise SystemExit(f"{kind.label(key)}: the session's process exited {exit_code}")
    print("\n".join(file_report_lines(args.out)))


def in_own_process(target: Callable[..., None], *args: Any) -> int | None:
    """`target(*args)` in a fresh (spawned) process, its exit code: a session's memory
    (several GB after a few sessions in one process) goes back when it ends."""
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join()
    return child.exitcode


def run_and_save(key: RunKey, sets: list[str], root: Path, out: Path, kind_name: str) -> None:
    """One comparison session, its record merged into `out` (a results file of the kind
    `kind_name`), in a child process."""
    name, arm, seed = key
    kind = KINDS[kind_name]
    task = compare_task(name)
    run = run_one(task, sets, root / f"{name}-{seed}-{arm}")
    record = {"task": name, "arm": arm, "seed": seed, "sets": sets, **run}
    record["samples"] = sampled(Path(run["folder"]), task)
    record["distinct_prompts"] = len(drawn_prompts(Path(run["folder"])))
    save_run(out, record, kind)
    print(
        f"[{kind.label(key)}] test {run['initial_test_accuracy']:.1%} -> "
        f"{run['test_accuracy']:.1%}, {run['wall_seconds'] / 60:.1f} min; in {out}",
        flush=True,
    )


def drawn_prompts(folder: Path) -> set[str]:
    """The ids of every prompt the session sampled, over all its cycles."""
    from graph.cycle_data import read_jsonl
    from storage import ArtifactStore
    from storage.layout import SessionLayout

    artifacts, ids = ArtifactStore(folder), set()
    for cycle in range(1, 100):
        name = SessionLayout.attempts_name(cycle)
        if artifacts.manifest().find(name) is None:
            break
        ids |= {Attempt.from_row(row).item.id for row in read_jsonl(artifacts, name)}
    return ids


def file_report_lines(path: Path) -> list[str]:
    """The report of a results file of any of this benchmark's kinds."""
    kind, runs = read_results(path)
    if kind is METHODS:
        return methods_report_lines(runs)
    return compare_file_report_lines(path)


def time_model_compute() -> None:
    """Time every generation, prefill and optimizer run of this process into
    COMPUTE_SECONDS (once per process: the wrappers are on the classes)."""
    timed(HFEngine, "generate", "generate")
    timed(HFEngine, "hidden_states", "hidden_states")
    timed(transformers.Trainer, "train", "train")


def run_headline(preset: str, sets: Sequence[str], root: Path) -> dict[str, Any]:
    """One headline session to the monitor's stop, its progress printed as it goes: wall
    time from the model's load on, the model compute it spent, its closing report's test
    scores, cycles and decisions, and the session it ran (its id, from which its folder)."""
    policy = resolve_policy(preset, None, list(sets))
    task = get_task(policy.task)
    spent_before = dict(COMPUTE_SECONDS)
    started = time.perf_counter()
    engine = load_model(policy.model)
    root.mkdir(parents=True, exist_ok=True)
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        session = Session(new_session_id(task.name), policy, store, task, engine)
        state = session.run(
            on_event=lambda e: (
                print(
                    f"  [{time.perf_counter() - started:6.0f} s] c{e.cycle} {e.node}: {e.message}",
                    flush=True,
                )
                if e.kind in ("decision", "metric", "error")
                else None
            )
        )
        folder = session.folder
    wall = time.perf_counter() - started
    final = state["final"]
    return {
        "task": task.name,
        "model": engine.name,
        "session_id": session.session_id,
        "folder": str(folder),
        "wall_seconds": wall,
        "compute_seconds": {k: COMPUTE_SECONDS[k] - spent_before[k] for k in COMPUTE_SECONDS},
        "initial": final["initial"],
        "final": final["final"],
        "cycles": final["cycles"],
        "decisions": final["decisions"],
    }


def headline_plan(args: argparse.Namespace) -> list[tuple[HeadlineKey, list[str]]]:
    """Every (preset, seed) of this invocation with the `--set`s its session runs with."""
    return [((args.preset, seed), [f"seed={seed}", *args.sets]) for seed in args.seeds]


def headline(args: argparse.Namespace) -> None:
    """Run the seeds `--out` does not hold finished yet, merging each into it as it ends."""
    todo = still_to_run(headline_plan(args), args.out, IMPROVE)
    for (preset, seed), sets in todo:
        run = run_headline(preset, sets, args.root / f"{preset}-{seed}")
        save_run(args.out, {"preset": preset, "seed": seed, "sets": sets, **run}, IMPROVE)
        print(
            f"[{preset} seed {seed}] test {run['initial']['test_accuracy']:.1%} -> "
            f"{run['final']['test_accuracy']:.1%}, {run['wall_seconds'] / 60:.1f} min; "
            f"in {args.out}",
            flush=True,
        )
    print("\n".join(headline_report_lines(read_runs(args.out, IMPROVE))))


DEFAULT_OUT = {
    "headline": Path("runs/bench-improve.json"),
    "compare": Path("runs/bench-compare.json"),
    "methods": Path("runs/bench-methods.json"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", help="the headline session's preset")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--root", type=Path, default=Path("runs/bench-improve"))
    parser.add_argument("--compare", action="store_true", help="uniform vs probe-guided")
    parser.add_argument(
        "--methods", action="store_true", help="training methods: sft vs grpo (--arms)"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(METHOD_ARMS),
        default=list(METHOD_ARMS),
        help="the methods compared (--methods)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="both modes")
    parser.add_argument("--tasks", nargs="+", default=["arithmetic", "hard"])
    parser.add_argument("--factor", type=int, default=3, help="guided arm's candidate_factor")
    parser.add_argument("--cycles", type=int, default=2, help="cycles per session (--compare)")
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default runs/bench-improve.json, runs/bench-compare.json with "
        "--compare, runs/bench-methods.json with --methods)",
    )
    parser.add_argument("--report", type=Path, help="print the tables of a saved --out file")
    args = parser.parse_args()
    if args.report:
        try:
            print("\n".join(file_report_lines(args.report)))
        except ValueError as error:
            raise SystemExit(str(error)) from None
        return
    if any(s.startswith("seed=") for s in args.sets):
        parser.error("set seeds with --seeds, not --set seed=...: the seed keys the results")
    if args.compare and args.methods:
        parser.error("--compare and --methods are two benchmarks: run one at a time")
    mode = "methods" if args.methods else "compare" if args.compare else "headline"
    args.out = args.out or DEFAULT_OUT[mode]
    if mode != "headline":
        compare(args, METHODS if args.methods else COMPARE)
        return
    time_model_compute()
    headline(args)


if __name__ == "__main__":
    main()
