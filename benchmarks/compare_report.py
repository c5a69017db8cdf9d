"""The improvement benchmark's results files and their reports (`benchmarks.improve`).

A results file names its kind, and holds one record per session, merged by the kind's key:

    {"kind": "compare", "schema_version": 3, "runs": [{"task": "arithmetic",
      "arm": "guided", "seed": 0, "sets": [...], "session_id": ..., "folder": ...,
      "initial_test_accuracy": ..., "test_accuracy": ..., "n_test": ...,
      "wall_seconds": ..., "cycles": [...], "samples": [...]}, ...]}

    {"kind": "improve", "schema_version": 1, "runs": [{"preset": "default", "seed": 0,
      "sets": [...], "task": ..., "model": ..., "session_id": ..., "folder": ...,
      "wall_seconds": ..., "compute_seconds": {"generate": ..., "hidden_states": ...,
      "train": ...}, "initial": {...}, "final": {...}, "cycles": [...],
      "decisions": [...]}, ...]}

`compare` (`--compare`, keyed by task, arm and seed) is uniform vs probe-guided
acquisition; `improve` (the headline mode, keyed by preset and seed) is the default
session measured whole, `initial` and `final` being its closing report's test scores;
`honesty` (`benchmarks.honesty`, keyed by preset and split seed) is one honesty session
with its four arms' answers on dev and test, finished once it has its `test` answers;
`methods` (`--methods`, keyed by task, arm and seed like `compare`) compares training
methods (SFT, GRPO, GRPO with learnability selection; `benchmarks.methods_report`);
`planners` (`benchmarks.planners`, keyed by preset, seed and arm) is one session planned by
the rules or by a served model over HTTP, finished once it has its final test score. A
file of schema version 2 has no kind: only `--compare` wrote those, and they are read as
`compare` (the next merge into one writes version 3).

A run merges its records into the file by that key (replacing a record of the same key,
keeping every other), so a table made in several invocations (seeds 0-1, then seed 2) is
one file; a key already there with a finished record and the same settings is skipped, so
a cut run restarted with the same command loses nothing. Everything here is pure but
`read_results` / `read_runs` / `write_runs` / `save_run`; the reports are lines of
markdown, chosen by the file's kind (`file_report_lines`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPARE_SCHEMA_VERSION = 3  # 3: the file names its kind (2 had no "kind" field)
IMPROVE_SCHEMA_VERSION = 1
HONESTY_SCHEMA_VERSION = 1
METHODS_SCHEMA_VERSION = 1
PLANNERS_SCHEMA_VERSION = 1
ARMS = ("uniform", "guided")

Record = dict[str, Any]
RunKey = tuple[str, str, int]  # (task, arm, seed)
HeadlineKey = tuple[str, int]  # (preset, seed)
Key = tuple[Any, ...]


class SettingsConflict(ValueError):
    """The results file holds a finished run of the same key made with other settings."""


# -- the two kinds of record ---------------------------------------------------------------


def run_key(record: Record) -> RunKey:
    """A comparison record's key.

    >>> run_key({"task": "hard", "arm": "guided", "seed": 2, "test_accuracy": 0.1})
    ('hard', 'guided', 2)
    """
    return (record["task"], record["arm"], int(record["seed"]))


def finished(record: Record) -> bool:
    """A comparison record is written whole once its session has ended: it has its test
    accuracy.

    >>> finished({"task": "t", "arm": "uniform", "seed": 0, "test_accuracy": 0.4})
    True
    >>> finished({"task": "t", "arm": "uniform", "seed": 0})
    False
    """
    return record.get("test_accuracy") is not None


def compare_order(records: Iterable[Record]) -> list[Record]:
    """By task (first seen), seed, then arm (uniform before guided)."""
    records = list(records)
    tasks = list(dict.fromkeys(r["task"] for r in records))
    arm_order = {arm: i for i, arm in enumerate(ARMS)}
    return sorted(
        records,
        key=lambda r: (tasks.index(r["task"]), r["seed"], arm_order.get(r["arm"], len(ARMS))),
    )


def headline_key(record: Record) -> HeadlineKey:
    """A headline record's key.

    >>> headline_key({"preset": "default", "seed": 1, "wall_seconds": 700.0})
    ('default', 1)
    """
    return (record["preset"], int(record["seed"]))


def headline_finished(record: Record) -> bool:
    """A headline record is written whole once its session has ended: it has its closing
    report's final scores.

    >>> headline_finished({"preset": "default", "seed": 0, "final": {"test_accuracy": 0.5}})
    True
    >>> headline_finished({"preset": "default", "seed": 0})
    False
    """
    return (record.get("final") or {}).get("test_accuracy") is not None


def headline_order(records: Iterable[Record]) -> list[Record]:
    """By preset (first seen), then seed."""
    records = list(records)
    presets = list(dict.fromkeys(r["preset"] for r in records))
    return sorted(records, key=lambda r: (presets.index(r["preset"]), r["seed"]))


@dataclass(frozen=True)
class FileKind:
    """One kind of results file: the name in its `kind` field, its schema version, and
    how its records are keyed, told finished, sorted and named in messages."""

    name: str
    schema_version: int
    key: Callable[[Record], Key]
    finished: Callable[[Record], bool]
    order: Callable[[Iterable[Record]], list[Record]]
    label: Callable[[Key], str]


COMPARE = FileKind(
    "compare",
    COMPARE_SCHEMA_VERSION,
    run_key,
    finished,
    compare_order,
    lambda key: f"{key[0]} seed {key[2]} {key[1]}",
)
IMPROVE = FileKind(
    "improve",
    IMPROVE_SCHEMA_VERSION,
    headline_key,
    headline_finished,
    headline_order,
    lambda key: f"preset {key[0]} seed {key[1]}",
)
HONESTY = FileKind(
    "honesty",
    HONESTY_SCHEMA_VERSION,
    headline_key,
    lambda record: bool(record.get("test")),
    headline_order,
    lambda key: f"preset {key[0]} split seed {key[1]}",
)
METHODS = FileKind(
    "methods",
    METHODS_SCHEMA_VERSION,
    run_key,
    finished,
    lambda records: sorted(records, key=lambda r: (r["task"], r["seed"], r["arm"])),
    lambda key: f"{key[0]} seed {key[2]} {key[1]}",
)
PLANNERS = FileKind(
    "planners",
    PLANNERS_SCHEMA_VERSION,
    lambda record: (record["preset"], int(record["seed"]), record["arm"]),
    lambda record: (record.get("test") or {}).get("final") is not None,
    lambda records: sorted(records, key=lambda r: (r["preset"], r["seed"], r["arm"] != "rules")),
    lambda key: f"preset {key[0]} seed {key[1]} {key[2]}",
)
KINDS = {kind.name: kind for kind in (COMPARE, IMPROVE, HONESTY, METHODS, PLANNERS)}
UNNAMED = {2: COMPARE}  # schema version -> kind, for files written before the kind field


# -- the file ------------------------------------------------------------------------------


def merge_runs(
    existing: Iterable[Record], new: Iterable[Record], kind: FileKind = COMPARE
) -> list[Record]:
    """Every existing record, a new one replacing the record of its key; in the kind's
    order.

    >>> old = [{"task": "a", "arm": "uniform", "seed": 0, "v": 1}]
    >>> new = [{"task": "a", "arm": "uniform", "seed": 0, "v": 2},
    ...        {"task": "a", "arm": "guided", "seed": 0, "v": 3}]
    >>> [(r["arm"], r["v"]) for r in merge_runs(old, new)]
    [('uniform', 2), ('guided', 3)]
    """
    merged: dict[Key, Record] = {}
    for record in [*existing, *new]:
        merged[kind.key(record)] = record
    return kind.order(merged.values())


def pending(
    plan: Sequence[tuple[Key, list[str]]], runs: Iterable[Record], kind: FileKind = COMPARE
) -> list[tuple[Key, list[str]]]:
    """The planned (key, settings) pairs still to run: those without a finished record of
    the same key. A finished record made with other settings is an error (its numbers
    would be mixed with this run's), raised before any session starts.

    >>> done = [{"task": "a", "arm": "uniform", "seed": 0, "sets": ["x"], "test_accuracy": 0.5}]
    >>> pending([(("a", "uniform", 0), ["x"]), (("a", "guided", 0), ["y"])], done)
    [(('a', 'guided', 0), ['y'])]
    """
    done = {kind.key(r): r for r in runs if kind.finished(r)}
    todo = []
    for key, sets in plan:
        record = done.get(key)
        if record is None:
            todo.append((key, sets))
        elif list(record.get("sets", [])) != list(sets):
            raise SettingsConflict(
                f"the results file already holds {kind.label(key)} run with other "
                f"settings ({record.get('sets')} vs {sets}): pass another --out, or remove "
                "that file to run them again"
            )
    return todo


def read_results(path: Path) -> tuple[FileKind | None, list[Record]]:
    """A results file's kind, from its `kind` field (or its schema version, for a file
    written before that field), and its records; (None, []) when there is no file yet."""
    if not path.exists():
        return None, []
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        data = {}
    named, version = data.get("kind"), data.get("schema_version", 0)
    kind = KINDS.get(named) if named is not None else UNNAMED.get(version)
    if kind is None or (named is not None and version != kind.schema_version):
        known = ", ".join(f"{k.name} {k.schema_version}" for k in KINDS.values())
        raise ValueError(
            f"{path} is not a results file of a known kind and schema version ({known}; "
            "an older improve.py wrote it?): pass another --out"
        )
    return kind, list(data["runs"])


def read_runs(path: Path, kind: FileKind = COMPARE) -> list[Record]:
    """The records of a results file of `kind` ([] when there is none yet); a file of
    the other kind is refused."""
    found, runs = read_results(path)
    if found is not None and found is not kind:
        raise ValueError(
            f"{path} holds {found.name} sessions, not {kind.name} ones: pass another --out"
        )
    return runs


def write_runs(path: Path, runs: Sequence[Record], kind: FileKind = COMPARE) -> None:
    """Write the file whole, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = {"kind": kind.name, "schema_version": kind.schema_version, "runs": list(runs)}
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def save_run(path: Path, record: Record, kind: FileKind = COMPARE) -> None:
    """Merge one finished record into the file as it is now (read again: another
    invocation may have added its own since this one started)."""
    write_runs(path, merge_runs(read_runs(path, kind), [record], kind), kind)


# -- numbers per run -----------------------------------------------------------------------


def still_to_run(
    plan: Sequence[tuple[Key, list[str]]], out: Path, kind: FileKind, noun: str = "sessions"
) -> list[tuple[Key, list[str]]]:
    """The entries of `plan` that `out` does not hold finished yet, saying how many it
    skips; a file of another kind or schema, or settings that conflict, end the run."""
    try:
        todo = pending(plan, read_runs(out, kind), kind)
    except ValueError as error:  # another kind or schema, or a SettingsConflict
        raise SystemExit(str(error)) from None
    if len(todo) < len(plan):
        print(f"{len(plan) - len(todo)} of {len(plan)} {noun} already in {out}: skipped")
    return todo


def group(runs: Iterable[Record]) -> dict[str, dict[str, list[Record]]]:
    """task -> arm -> finished runs sorted by seed."""
    grouped: dict[str, dict[str, list[Record]]] = {}
    for record in runs:
        if finished(record):
            grouped.setdefault(record["task"], {}).setdefault(record["arm"], []).append(record)
    for arms in grouped.values():
        for records in arms.values():
            records.sort(key=lambda r: r["seed"])
    return grouped


def cycle_values(run: Record, key: str) -> list[float]:
    """`key` of each evaluated cycle (>= 1) that has it."""
    return [row[key] for row in run["cycles"] if row.get(key) is not None]


def cycle_mean(run: Record, key: str) -> float | None:
    values = cycle_values(run, key)
    return statistics.fmean(values) if values else None


def at_cycle(run: Record, key: str, cycle: int) -> float | None:
    """`key` of one cycle's row (None when the cycle evaluated nothing or lacks it)."""
    row = next((r for r in run["cycles"] if r["cycle"] == cycle), None)
    return None if row is None else row.get(key)


def samples_total(run: Record, key: str) -> float | None:
    samples = run.get("samples") or []
    return sum(s[key] for s in samples) if samples else None


def samples_mean(run: Record, key: str) -> float | None:
    samples = run.get("samples") or []
    return statistics.fmean(s[key] for s in samples) if samples else None


def forecast_error(run: Record) -> float | None:
    """Mean |forecast - measured| dev accuracy over the run's cycles."""
    rows = [r for r in run["cycles"] if r.get("predicted_accuracy") is not None]
    if not rows:
        return None
    return statistics.fmean(abs(r["predicted_accuracy"] - r["accuracy"]) for r in rows)


def cycle_scoring_share(row: Record) -> float | None:
    """Pool scoring time / sampling time of one cycle (None: nothing sampled).

    >>> cycle_scoring_share({"scoring_seconds": 1.0, "sampling_seconds": 50.0})
    0.02
    """
    sampling = row.get("sampling_seconds") or 0.0
    return row.get("scoring_seconds", 0.0) / sampling if sampling else None


def scoring_share(run: Record) -> float | None:
    """The run's pool scoring time over its sampling time, all cycles together."""
    scoring = sum(r.get("scoring_seconds", 0.0) for r in run["cycles"])
    sampling = sum(r.get("sampling_seconds", 0.0) for r in run["cycles"])
    return scoring / sampling if sampling else None


def by_seed(runs: Sequence[Record], value: Callable[[Record], float | None]) -> dict[int, float]:
    """seed -> value, for the runs that have one."""
    found = {run["seed"]: value(run) for run in runs}
    return {seed: v for seed, v in found.items() if v is not None and not math.isnan(v)}


def paired(
    uniform: Sequence[Record], guided: Sequence[Record], value: Callable[[Record], float | None]
) -> dict[int, float]:
    """seed -> guided - uniform, for the seeds both arms ran.

    >>> u = [{"seed": 0, "x": 0.4}, {"seed": 1, "x": 0.5}]
    >>> g = [{"seed": 1, "x": 0.6}, {"seed": 2, "x": 0.1}]
    >>> {s: round(d, 3) for s, d in paired(u, g, lambda r: r["x"]).items()}
    {1: 0.1}
    """
    left, right = by_seed(uniform, value), by_seed(guided, value)
    return {seed: right[seed] - left[seed] for seed in sorted(left.keys() & right.keys())}


# -- formatting ----------------------------------------------------------------------------


def t_half_width(values: Sequence[float]) -> float:
    """95% t-interval half-width of the mean."""
    from scipy.stats import t

    return float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def mean_ci(values: Iterable[float], spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    """Mean and 95% t-interval half-width over seeds.

    >>> mean_ci([0.4, 0.5, 0.6])
    '0.500 +- 0.248 (n=3)'
    >>> mean_ci([0.4, 0.5], spec=".1f", scale=100, unit="%")
    '45.0% +- 63.5 (n=2)'
    >>> mean_ci([10709.0], spec=",.0f")
    '10,709 (n=1)'
    >>> mean_ci([])
    '-'
    """
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return "-"
    mean = f"{statistics.fmean(kept) * scale:{spec}}{unit}"
    if len(kept) < 2:
        return f"{mean} (n=1)"
    return f"{mean} +- {t_half_width(kept) * scale:{spec}} (n={len(kept)})"


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float]) -> str:
    """Mean of `numerator` over mean of `denominator`.

    >>> ratio_of_means([9808.0], [10709.0])
    '0.92x'
    >>> ratio_of_means([], [1.0])
    '-'
    """
    if not numerator or not denominator or statistics.fmean(denominator) == 0:
        return "-"
    return f"{statistics.fmean(numerator) / statistics.fmean(denominator):.2f}x"


def scaled(value: float, scale: float) -> float:
    """`value` x `scale`, an int left an int when the scale is 1 (for the `d` format)."""
    return value if scale == 1 else value * scale


def fmt(value: float | None, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
    """One value, or '-'.

    >>> fmt(0.4667, ".1f", 100, "%"), fmt(None), fmt(12, "d")
    ('46.7%', '-', '12')
    """
    return "-" if value is None else f"{scaled(value, scale):{spec}}{unit}"


def per_seed_cell(
    values: dict[int, float], spec: str = ".3f", scale: float = 1.0, unit: str = ""
) -> str:
    """Each seed's value.

    >>> per_seed_cell({0: 0.47, 2: 0.5})
    'seed 0 0.470, seed 2 0.500'
    """
    cells = (f"seed {seed} {scaled(v, scale):{spec}}{unit}" for seed, v in values.items())
    return ", ".join(cells) or "-"


def span(values: Iterable[float | None], spec: str = ".3f", scale: float = 1.0) -> str:
    """Smallest to largest, e.g. '0.44-0.66'.

    >>> span([0.66, None, 0.44], ".2f")
    '0.44-0.66'
    >>> span([None])
    '-'
    """
    kept = [v for v in values if v is not None]
    if not kept:
        return "-"
    return f"{scaled(min(kept), scale):{spec}}-{scaled(max(kept), scale):{spec}}"


# -- the report ----------------------------------------------------------------------------

Measure = tuple[str, Callable[[Record], float | None], str, float, str, bool]
# (name, value per run, format spec, scale, unit, with a guided / uniform ratio)

MEASURES: tuple[Measure, ...] = (
    ("test accuracy, initial model", lambda r: r["initial_test_accuracy"], ".1f", 100, "%", False),
    ("test accuracy, final model", lambda r: r["test_accuracy"], ".1f", 100, "%", False),
    ("tokens sampled (all cycles)", lambda r: samples_total(r, "tokens"), ",.0f", 1, "", True),
    (
        "wasted-prompt share (all K samples one verdict)",
        lambda r: samples_mean(r, "wasted"),
        ".3f",
        1,
        "",
        True,
    ),
    (
        "prompts with a right sample, per cycle",
        lambda r: samples_mean(r, "right_prompts"),
        ".1f",
        1,
        "",
        True,
    ),
    (
        "refit probe AUROC, each new version's fresh dev labels",
        lambda r: cycle_mean(r, "probe_auroc"),
        ".3f",
        1,
        "",
        False,
    ),
    (
        "last cycle's probe, same labels",
        lambda r: cycle_mean(r, "stale_probe_auroc"),
        ".3f",
        1,
        "",
        False,
    ),
    ("mean token logprob AUROC", lambda r: cycle_mean(r, "logprob_auroc"), ".3f", 1, "", False),
    ("mean token entropy AUROC", lambda r: cycle_mean(r, "entropy_auroc"), ".3f", 1, "", False),
    ("probe ECE, fresh dev labels", lambda r: cycle_mean(r, "probe_ece"), ".3f", 1, "", False),
    ("|forecast - dev accuracy|", forecast_error, ".3f", 1, "", False),
    ("pool scoring / sampling time", scoring_share, ".1f", 100, "%", False),
    ("wall minutes", lambda r: r["wall_seconds"] / 60, ".1f", 1, "", False),
)


def auroc_at(cycle: int) -> Callable[[Record], float | None]:
    """The refit probe's AUROC on one cycle's fresh dev labels, as a per-run value."""
    return lambda run: at_cycle(run, "probe_auroc", cycle)


def summary_lines(task: str, arms: dict[str, list[Record]]) -> list[str]:
    """Each measure's mean over seeds with its 95% t-interval per arm, guided / uniform
    where a ratio means something, then per-seed values of the cells quoted by seed."""
    uniform, guided = arms.get("uniform", []), arms.get("guided", [])
    seeds = sorted({r["seed"] for r in [*uniform, *guided]})
    lines = [
        f"### {task}: uniform vs probe-guided acquisition (seeds {', '.join(map(str, seeds))})",
        "",
        "| measure | uniform | guided | guided / uniform |",
        "|---|---|---|---|",
    ]
    for name, value, spec, scale, unit, ratio in MEASURES:
        left = list(by_seed(uniform, value).values())
        right = list(by_seed(guided, value).values())
        cells = [mean_ci(v, spec, scale, unit) for v in (left, right)]
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {ratio_of_means(right, left) if ratio else ''} |"
        )
    for name, value, spec, scale, unit, _ in MEASURES[:2]:
        lines.append(
            f"| {name}, by seed | {per_seed_cell(by_seed(uniform, value), spec, scale, unit)} "
            f"| {per_seed_cell(by_seed(guided, value), spec, scale, unit)} | |"
        )
    cycles = sorted({row["cycle"] for r in [*uniform, *guided] for row in r["cycles"]})
    for cycle in cycles:
        auroc = auroc_at(cycle)
        lines.append(
            f"| refit probe AUROC, cycle {cycle}, by seed | {per_seed_cell(by_seed(uniform, auroc))} "
            f"| {per_seed_cell(by_seed(guided, auroc))} | |"
        )
    differences = paired(uniform, guided, lambda r: r["test_accuracy"])
    lines += [
        "",
        "guided - uniform test accuracy, paired by seed: "
        f"{mean_ci(differences.values(), '.1f', 100, ' points')}; "
        + ", ".join(f"seed {s} {d * 100:+.1f}" for s, d in differences.items()),
    ]
    return lines


def cycle_rows(run: Record) -> list[dict[str, Any]]:
    """One row per cycle of a run: its evaluated metrics (cycle >= 1, when the cycle
    trained a version) joined with what its attempts say (every cycle that sampled)."""
    metrics = {row["cycle"]: row for row in run["cycles"]}
    samples = {s["cycle"]: s for s in run.get("samples") or []}
    return [
        {"cycle": cycle, **samples.get(cycle, {}), **{"metrics": metrics.get(cycle)}}
        for cycle in sorted(metrics.keys() | samples.keys())
    ]


def cycle_table(runs: Sequence[Record]) -> list[str]:
    """Every run's every cycle: dev accuracy, the probe's forecast and AUROC beside the
    baselines, what acquisition sampled, and what scoring the pool cost."""
    lines = [
        "| task | seed | arm | cycle | dev acc | forecast | probe AUROC | last probe | logprob "
        "| entropy | trained on | tokens | wasted | prompts with a right sample | scoring / sampling |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for row in cycle_rows(run):
            m = row["metrics"] or {}
            share = cycle_scoring_share(m) if m else None
            cells = [
                run["task"],
                str(run["seed"]),
                run["arm"],
                str(row["cycle"]),
                fmt(m.get("accuracy"), ".1f", 100, "%"),
                fmt(m.get("predicted_accuracy"), ".1f", 100, "%"),
                fmt(m.get("probe_auroc")),
                fmt(m.get("stale_probe_auroc")),
                fmt(m.get("logprob_auroc")),
                fmt(m.get("entropy_auroc")),
                fmt(m.get("train_examples"), "d") if m else "not trained",
                fmt(row.get("tokens"), ",d"),
                fmt(row.get("wasted"), ".2f"),
                fmt(row.get("right_prompts"), "d"),
                fmt(share, ".1f", 100, "%"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def span_lines(runs: Sequence[Record]) -> list[str]:
    """The ranges the README's prose quotes, over every run and cycle of the file."""
    later = [row for run in runs for row in run["cycles"] if row["cycle"] >= 2]
    rows = [row for run in runs for row in run["cycles"]]
    return [
        f"- refit probe AUROC from cycle 2 on, both arms: "
        f"{span((r.get('probe_auroc') for r in later), '.2f')}; mean token logprob AUROC on the "
        f"same labels: {span((r.get('logprob_auroc') for r in later), '.2f')}",
        f"- probe forecast (1 - mean risk) per cycle: "
        f"{span((r.get('predicted_accuracy') for r in rows), '.1f', 100)}% for measured dev "
        f"accuracy {span((r['accuracy'] for r in rows), '.1f', 100)}%",
        f"- pool scoring / sampling time per cycle: "
        f"{span((cycle_scoring_share(r) for r in rows if r.get('scoring_seconds')), '.1f', 100)}%",
        f"- prompts with a right sample per cycle: "
        f"{span((s['right_prompts'] for run in runs for s in run.get('samples') or [] if 'right_prompts' in s), 'd')}",
        f"- initial test accuracy: {span((r['initial_test_accuracy'] for r in runs), '.1f', 100)}%; "
        f"session wall: {span((r['wall_seconds'] / 60 for r in runs), '.1f')} min",
    ]


def report_lines(runs: Sequence[Record]) -> list[str]:
    """The whole report: per task the summary table and the paired difference, then every
    run's cycles, then the ranges quoted in prose. Unfinished records are left out."""
    grouped = group(runs)
    lines: list[str] = []
    for task, arms in grouped.items():
        lines += ["", *summary_lines(task, arms)]
        task_runs = [r for arm in ARMS for r in arms.get(arm, [])]
        task_runs.sort(key=lambda r: (r["seed"], ARMS.index(r["arm"])))
        lines += [
            "",
            f"{task}, per cycle:",
            "",
            *cycle_table(task_runs),
            "",
            *span_lines(task_runs),
        ]
    return lines


# -- the headline report -------------------------------------------------------------------

COMPUTE_BUCKETS = ("generate", "hidden_states", "train")  # printed generate / prefill / train


def gain(run: Record) -> float:
    """Final minus initial test accuracy of one session (paired by seed by construction).

    >>> round(gain({"initial": {"test_accuracy": 0.165}, "final": {"test_accuracy": 0.495}}), 3)
    0.33
    """
    return float(run["final"]["test_accuracy"] - run["initial"]["test_accuracy"])


def outside_compute_share(run: Record) -> float:
    """The share of a session's wall time spent outside model compute.

    >>> outside_compute_share({"wall_seconds": 100.0,
    ...                        "compute_seconds": {"generate": 90.0, "train": 8.0}})
    0.02
    """
    wall = float(run["wall_seconds"])
    return (wall - sum(run["compute_seconds"].values())) / wall


def percent(value: float) -> str:
    """A rate as a percentage, one decimal.

    >>> percent(0.165)
    '16.5%'
    """
    return f"{value:.1%}"


@dataclass(frozen=True)
class HeadlineRow:
    """One row of the headline table: its cell for one session, and the value its mean
    over seeds is taken of (None: no mean, e.g. counts quoted as initial -> final)."""

    name: str
    cell: Callable[[Record], str]
    value: Callable[[Record], float] | None = None
    spec: str = ".1f"
    scale: float = 100
    unit: str = "%"


HEADLINE_ROWS: tuple[HeadlineRow, ...] = (
    HeadlineRow(
        "wall time (target <= 12 min)",
        lambda r: f"{r['wall_seconds'] / 60:.1f} min",
        lambda r: r["wall_seconds"] / 60,
        scale=1,
        unit=" min",
    ),
    HeadlineRow(
        "test accuracy, initial model",
        lambda r: f"{percent(r['initial']['test_accuracy'])} (n={r['initial']['n_test']})",
        lambda r: r["initial"]["test_accuracy"],
    ),
    HeadlineRow(
        "test accuracy, final model",
        lambda r: f"{percent(r['final']['test_accuracy'])} ({r['final']['version']})",
        lambda r: r["final"]["test_accuracy"],
    ),
    HeadlineRow(
        "gain, paired by seed (target >= +30 points)",
        lambda r: f"{gain(r) * 100:+.1f} points",
        gain,
        unit=" points",
    ),
    HeadlineRow(
        "hallucination rate, initial model",
        lambda r: percent(r["initial"]["test_hallucination_rate"]),
        lambda r: r["initial"]["test_hallucination_rate"],
    ),
    HeadlineRow(
        "hallucination rate, final model",
        lambda r: percent(r["final"]["test_hallucination_rate"]),
        lambda r: r["final"]["test_hallucination_rate"],
    ),
    HeadlineRow(
        "truncated test answers, initial -> final",
        lambda r: f"{r['initial']['test_truncated']} -> {r['final']['test_truncated']}",
    ),
    HeadlineRow(
        "model compute: generate / prefill / train",
        lambda r: " / ".join(f"{r['compute_seconds'][k]:.0f} s" for k in COMPUTE_BUCKETS),
    ),
    HeadlineRow(
        "share of wall time outside model compute (target <= 3%)",
        lambda r: percent(outside_compute_share(r)),
        outside_compute_share,
    ),
)


def headline_summary_lines(preset: str, runs: Sequence[Record]) -> list[str]:
    """One column per seed with every cell of the session's table, and a last column with
    the mean over seeds and its 95% t-interval where a mean means something."""
    seeds = [r["seed"] for r in runs]
    tasks = ", ".join(dict.fromkeys(r["task"] for r in runs))
    models = ", ".join(dict.fromkeys(r["model"] for r in runs))
    lines = [
        f"### Improvement session: preset {preset}, task {tasks}, model {models} "
        f"(seeds {', '.join(map(str, seeds))})",
        "",
    ]
    settings = {seed_free(r["sets"]) for r in runs}
    if len(settings) > 1:
        lines += [
            "**the seeds ran with different settings**: "
            + "; ".join(f"seed {r['seed']} {list(seed_free(r['sets']))}" for r in runs),
            "",
        ]
    lines += [
        "| measure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean, 95% t-interval |",
        "|---|" + "---|" * len(seeds) + "---|",
    ]
    for row in HEADLINE_ROWS:
        values = [row.value(r) for r in runs] if row.value else []
        mean = mean_ci(values, row.spec, row.scale, row.unit) if row.value else ""
        lines.append(f"| {row.name} | " + " | ".join(row.cell(r) for r in runs) + f" | {mean} |")
    return lines


def seed_free(sets: Sequence[str]) -> tuple[str, ...]:
    """A session's `--set`s but its seed.

    >>> seed_free(["seed=2", "monitor.max_cycles=3"])
    ('monitor.max_cycles=3',)
    """
    return tuple(s for s in sets if not s.startswith("seed="))


def headline_seed_lines(run: Record) -> list[str]:
    """One session's cycles (dev numbers, the probe's mean risk and AUROC, the decision)
    and the monitor's decisions with their reasons."""
    lines = [
        f"#### seed {run['seed']}: session {run['session_id']} ({run['folder']})",
        "",
        "| cycle | version | dev acc | halluc. | mean risk | probe AUROC | decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in run["cycles"]:
        cells = [
            str(row["cycle"]),
            row["version"],
            fmt(row["accuracy"], ".1f", 100, "%"),
            fmt(row["hallucination_rate"], ".1f", 100, "%"),
            fmt(row.get("mean_risk")),
            fmt(row.get("probe_auroc")),
            row.get("decision") or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "monitor decisions:"]
    lines += [f"- cycle {d['cycle']}: {d['action']}: {d['reason']}" for d in run["decisions"]]
    return lines


def headline_report_lines(runs: Sequence[Record]) -> list[str]:
    """The whole headline report: per preset the table of every seed beside the means,
    then each seed's cycles and decisions. Unfinished records are left out."""
    by_preset: dict[str, list[Record]] = {}
    for run in headline_order(r for r in runs if headline_finished(r)):
        by_preset.setdefault(run["preset"], []).append(run)
    lines: list[str] = []
    for preset, preset_runs in by_preset.items():
        lines += ["", *headline_summary_lines(preset, preset_runs)]
        for run in preset_runs:
            lines += ["", *headline_seed_lines(run)]
    return lines


REPORTS: dict[str, Callable[[Sequence[Record]], list[str]]] = {
    COMPARE.name: report_lines,
    IMPROVE.name: headline_report_lines,
}


def file_report_lines(path: Path) -> list[str]:
    """The report of a results file, of the kind the file names."""
    kind, runs = read_results(path)
    if kind is None:
        raise ValueError(f"{path}: no such results file")
    if kind.name not in REPORTS:
        raise ValueError(
            f"{path} holds {kind.name} runs: `python -m benchmarks.{kind.name} --report`"
        )
    return REPORTS[kind.name](runs)
