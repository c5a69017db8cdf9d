"""The report of `python -m benchmarks.improve --methods`: training methods compared on the
same seeds, tasks, prompts per cycle and K, at a fixed number of cycles (a results file of
kind `methods`, keyed by task, arm and seed; `benchmarks.compare_report` keeps the file).

Per task, per arm: test accuracy of the initial and the final model and the gain (paired
by seed by construction: each session scores its own initial model), tokens sampled,
distinct prompts drawn, the share of mixed groups (K samples with both verdicts) observed
and the share the pass-rate posteriors predicted, optimize seconds per cycle and wall
minutes, and the dev gain the default method is chosen by, each as the mean over seeds with its 95% t-interval and per seed; then each arm's
test-accuracy difference from `sft`, paired by seed. Pure: lines of markdown."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from benchmarks.compare_report import (
    Record,
    by_seed,
    cycle_mean,
    group,
    mean_ci,
    paired,
    per_seed_cell,
    samples_mean,
    samples_total,
)

# the arms `--methods` runs, each with the `--set`s that make it (same size otherwise)
METHOD_ARMS: dict[str, tuple[str, ...]] = {
    "sft": ("optimize.method=sft",),
    "grpo": ("optimize.method=grpo",),
    "grpo-learnability": (
        "optimize.method=grpo",
        "acquire.order=learnability",
        "acquire.candidate_factor=3",
    ),
    # SFT first, then RL (the usual order): cycle 1 trains SFT on the right samples, so
    # GRPO starts from a model whose groups are more often mixed
    "sft-grpo": ("optimize.method=grpo", "optimize.grpo_warmup_cycles=1"),
    "sft-grpo-learnability": (
        "optimize.method=grpo",
        "optimize.grpo_warmup_cycles=1",
        "acquire.order=learnability",
        "acquire.candidate_factor=3",
    ),
}
BASELINE = "sft"


def optimize_seconds(run: Record) -> float | None:
    """Mean wall seconds of the run's optimize node, per cycle that trained."""
    seconds = run.get("optimize_seconds") or []
    return statistics.fmean(seconds) if seconds else None


def mixed_share(run: Record) -> float | None:
    """Mean over cycles of the share of prompts whose K samples got both verdicts."""
    wasted = samples_mean(run, "wasted")
    return None if wasted is None else 1.0 - wasted


def dev_gain(run: Record) -> float | None:
    """Dev accuracy of the final model minus the initial model's (records before dev
    accuracies were kept: None)."""
    if "dev_accuracy" not in run:
        return None
    return float(run["dev_accuracy"] - run["initial_dev_accuracy"])


Row = tuple[str, Callable[[Record], float | None], str, float, str]

ROWS: tuple[Row, ...] = (
    ("test accuracy, initial model", lambda r: r["initial_test_accuracy"], ".1f", 100, "%"),
    ("test accuracy, final model", lambda r: r["test_accuracy"], ".1f", 100, "%"),
    (
        "test gain (final - initial)",
        lambda r: r["test_accuracy"] - r["initial_test_accuracy"],
        ".1f",
        100,
        " pts",
    ),
    (
        "dev gain (final - initial; chooses the default method)",
        dev_gain,
        ".1f",
        100,
        " pts",
    ),
    ("tokens sampled (all cycles)", lambda r: samples_total(r, "tokens"), ",.0f", 1, ""),
    ("distinct prompts drawn", lambda r: r.get("distinct_prompts"), ".0f", 1, ""),
    ("mixed-group share, observed", mixed_share, ".3f", 1, ""),
    (
        "mixed-group share, predicted",
        lambda r: cycle_mean(r, "predicted_mixed_share"),
        ".3f",
        1,
        "",
    ),
    ("optimize seconds per cycle", optimize_seconds, ".0f", 1, " s"),
    ("wall minutes", lambda r: r["wall_seconds"] / 60, ".1f", 1, ""),
)


def task_lines(task: str, arms: dict[str, list[Record]]) -> list[str]:
    """One task's table (means with intervals, then per seed) and the paired differences."""
    names = [arm for arm in METHOD_ARMS if arm in arms] + sorted(set(arms) - set(METHOD_ARMS))
    seeds = sorted({r["seed"] for runs in arms.values() for r in runs})
    lines = [
        f"### {task}: training methods (seeds {', '.join(map(str, seeds))})",
        "",
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, value, spec, scale, unit in ROWS:
        means = [mean_ci(by_seed(arms[a], value).values(), spec, scale, unit) for a in names]
        lines.append(f"| {name} | " + " | ".join(means) + " |")
        cells = [per_seed_cell(by_seed(arms[a], value), spec, scale, unit) for a in names]
        lines.append(f"| {name}, by seed | " + " | ".join(cells) + " |")
    lines.append("")
    for arm in names:
        if arm == BASELINE or BASELINE not in arms:
            continue
        diff = paired(arms[BASELINE], arms[arm], lambda r: r["test_accuracy"])
        lines.append(
            f"{arm} - {BASELINE} test accuracy, paired by seed: "
            f"{mean_ci(diff.values(), '.1f', 100, ' pts')}; "
            f"{per_seed_cell(diff, '+.1f', 100, ' pts')}"
        )
    return lines


def methods_report_lines(runs: Sequence[Record]) -> list[str]:
    """Every task's table; unfinished records are left out."""
    lines: list[str] = []
    for task, arms in group(runs).items():
        lines += ["", *task_lines(task, arms)]
    return lines
