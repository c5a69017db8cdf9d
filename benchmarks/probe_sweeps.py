"""Probe benchmark on the default model: pre-generation probe vs post-generation baselines.

    python -m benchmarks.probe_sweeps [--tasks capitals,arithmetic] [--arith-n 320] [--k 5]
                                      [--seed 0] [--split-seeds 5] [--quick]

Prints markdown tables:
1. per task: labels; the chosen probe (the default `autodidact probe sweep`: both feature
   kinds, every layer, logistic regression, chosen on validation) and each baseline (mean
   token logprob, mean token entropy, self-consistency over K samples) on the TEST split:
   AUROC with bootstrap 95% CI, AUPRC, wall time per item (interleaved in this run); the
   probe's cost as a separate prefill pass, and inside generation (greedy generation with
   prefill capture and the probe scoring each prompt against the same generation without
   either, interleaved, median of --time-repeats); the issue's
   target ratio (probe AUROC - 0.5) / (best post-generation AUROC - 0.5).
2. per task: probe variants, each chosen on validation only and scored once on test
   (seed --seed), plus the mean test AUROC over --split-seeds grouped splits.
3. capitals: a probe trained on more country facts (`facts` task: continent, demonym,
   language, currency code of the train countries only) and tested on the capitals test.

Greedy answers, features and samples are cached under runs/bench-probes-cache/ (keyed by
model fingerprint, items and token budget), so re-running only re-fits and re-times.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from engines import load_model
from engines.base import Engine, SamplingParams
from engines.hf import HFEngine
from probes.artifact import Probe
from probes.data import ProbeData, collect, sample_consistency
from probes.evaluation import EvalReport, evaluate
from probes.fit import EstimatorConfig, SweepRow, choose
from probes.labels import summarize_labels, usable
from probes.metrics import RiskMetrics, auroc
from probes.runtime import RiskScorer
from probes.split import grouped_split
from probes.sweep import SweepResult, sweep
from tasks import get_task
from tasks.base import Item, Task
from tasks.verifiers import final_number, normalize

DEFAULT_CACHE = Path("runs/bench-probes-cache")
# Layer groups tried as concatenated features (the model has 30 decoder layers; 0 = embeddings).
CONCAT_GROUPS: tuple[tuple[int, ...], ...] = (
    (10, 20, 30),
    (15, 20, 25, 30),
    (24, 26, 28, 30),
    (0, 10, 20, 30),
    (0, 5, 10, 15, 20, 25, 30),
)
LOGREG_GRID = tuple(EstimatorConfig("logreg", C=c) for c in (0.001, 0.01, 0.1, 1.0))
MLP_GRID = (EstimatorConfig("mlp"), EstimatorConfig("mlp", alpha=10.0))
MLP_LAYERS = (0, 5, 10, 15, 20, 25, 30)
DEFAULT_ESTIMATOR = EstimatorConfig()
SC_TEMPERATURE = 0.7
SC_BATCH = 8  # prompts per sampling batch, as `sample_consistency` runs it
FACT_ATTRIBUTES = ("continent", "demonym", "language", "currency")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(label: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        log(f"  {label}: {done}/{total}")

    return report


# ---------------------------------------------------------------- data and cache


def items_key(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.id}\x00{item.prompt}\x00{'|'.join(item.answers)}\n".encode())
    return digest.hexdigest()[:10]


def save_atomic(data: ProbeData, folder: Path) -> None:
    """Write next to the folder, then swap, so an interrupted save leaves the old cache."""
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    data.save(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def cached_collect(
    engine: Engine, task: Task, items: Sequence[Item], cache: Path, label: str
) -> tuple[ProbeData, Path]:
    """Greedy answers and features of `items`, from the cache when there (re-labelled with
    the task's current verifier), else collected and cached."""
    key = f"{len(items)}items-{task.max_new_tokens}tok-{engine.fingerprint}-{items_key(items)}"
    folder = cache / f"{label}-{key}"
    if (folder / "data.json").is_file():
        log(f"{label}: cached greedy answers and features in {folder}")
        data = ProbeData.load(folder)
        if data.item_ids != [item.id for item in items]:
            raise RuntimeError(f"{folder}: cached items differ; delete the folder")
        return data.relabeled(task), folder
    log(
        f"{label}: greedy answers with prefill capture, {len(items)} items, "
        f"{task.max_new_tokens} new tokens"
    )
    started = time.perf_counter()
    data = collect(engine, task, items, progress_cb=progress(label))
    log(f"{label}: collected in {time.perf_counter() - started:.0f} s")
    save_atomic(data, folder)
    return data, folder


def ensure_samples(
    engine: Engine, data: ProbeData, rows: Sequence[int], k: int, seed: int, folder: Path
) -> ProbeData:
    """K samples for every row in `rows` (cached with the data)."""
    missing = [r for r in rows if len(data.consistency.get(data.item_ids[r]) or []) != k]
    if not missing:
        return data
    log(f"{data.task}: self-consistency, {len(missing)} items x {k} samples")
    data = sample_consistency(
        engine,
        data,
        k=k,
        temperature=SC_TEMPERATURE,
        rows=missing,
        batch_size=SC_BATCH,
        seed=seed,
        progress_cb=progress(f"{data.task} samples"),
    )
    save_atomic(data, folder)
    return data


# ---------------------------------------------------------------- answer extraction for SC

_STOP = {
    "the",
    "it",
    "its",
    "this",
    "that",
    "i",
    "capital",
    "city",
    "a",
    "an",
    "in",
    "of",
    "yes",
    "no",
}


def capitals_key(answer: str) -> str:
    """The answer's capitalized words (sorted, normalized), so "The capital of Peru is Lima."
    and "Lima is the capital of Peru." agree; falls back to the whole normalized text."""
    words = {normalize(w) for w in re.findall(r"\b[A-Z][\w'-]*", answer)} - _STOP
    return " ".join(sorted(w for w in words if w)) or normalize(answer)


def number_key(answer: str) -> str:
    value = final_number(answer)
    return normalize(answer) if value is None else f"{value:g}"


ANSWER_KEYS: dict[str, Callable[[str], str]] = {"capitals": capitals_key, "arithmetic": number_key}


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    prompts: int
    sc_prompts: int
    repeats: int
    greedy: float  # s per item: greedy answer, no capture (what logprob / entropy need)
    greedy_probe: float  # s per item: greedy answer with prefill capture and risk_fn
    prefill: float  # s per item: separate prefill pass + probe scoring
    self_consistency: float  # s per item: K samples
    probe_range: tuple[float, float]  # per-repeat greedy_probe / greedy - 1: the noise

    @property
    def in_generation(self) -> float:
        """s per item the probe adds to a greedy generation: the generation with prefill
        capture and the probe scoring each prompt, less the same generation without
        either (medians of the same interleaved loop; below zero within the noise)."""
        return self.greedy_probe - self.greedy

    @property
    def in_generation_share(self) -> float:
        """The probe inside generation over the generation without it, from the medians.

        >>> Timing(8, 8, 3, 0.20, 0.21, 0.05, 1.0, (0.0, 0.1)).in_generation_share
        0.05
        """
        return round(self.greedy_probe / self.greedy - 1, 12)


def interleaved_seconds(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Wall seconds of each function per repeat, the order reversed every other repeat, so
    the load of other processes falls on all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        order = list(fns) if repeat % 2 == 0 else list(reversed(fns))
        for name in order:
            started = time.perf_counter()
            fns[name]()
            seconds[name].append(time.perf_counter() - started)
        log(
            f"  timing repeat {repeat + 1}/{repeats}: "
            + ", ".join(f"{n} {s[-1]:.1f}s" for n, s in seconds.items())
        )
    return seconds


def time_methods(
    engine: Engine,
    prompts: Sequence[str],
    budget: int,
    scorer: RiskScorer,
    k: int,
    repeats: int,
    sc_prompts: int,
    seed: int,
) -> Timing:
    """Interleaved wall times of every method on the same prompts."""
    prompts = list(prompts)
    sc_list = prompts[:sc_prompts]
    engine.generate(prompts, SamplingParams(max_new_tokens=4), capture=True)  # warm-up
    answer = SamplingParams(max_new_tokens=budget)

    def greedy() -> object:
        return engine.generate(prompts, answer, capture=False)

    def greedy_probe() -> object:
        return engine.generate(prompts, answer, capture=True, risk_fn=scorer)

    def prefill() -> object:
        return [scorer(states) for states in engine.hidden_states(prompts)]

    def sampled() -> object:
        return [
            engine.generate(
                sc_list[s : s + SC_BATCH],
                SamplingParams(n=k, temperature=SC_TEMPERATURE, max_new_tokens=budget, seed=seed),
                capture=False,
            )
            for s in range(0, len(sc_list), SC_BATCH)
        ]

    fns = {"greedy": greedy, "greedy_probe": greedy_probe, "prefill": prefill, "sampled": sampled}
    seconds = interleaved_seconds(fns, repeats)
    ratios = [p / g - 1 for p, g in zip(seconds["greedy_probe"], seconds["greedy"], strict=True)]
    per_item = {n: statistics.median(s) for n, s in seconds.items()}
    return Timing(
        prompts=len(prompts),
        sc_prompts=len(sc_list),
        repeats=repeats,
        greedy=per_item["greedy"] / len(prompts),
        greedy_probe=per_item["greedy_probe"] / len(prompts),
        prefill=per_item["prefill"] / len(prompts),
        self_consistency=per_item["sampled"] / len(sc_list),
        probe_range=(min(ratios), max(ratios)),
    )


# ---------------------------------------------------------------- sweeps and variants


@dataclass(frozen=True)
class Variant:
    name: str
    keep: Callable[[SweepRow], bool]


def _single(row: SweepRow) -> bool:
    return len(row.spec.layers) == 1


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "default sweep: both kinds, single layers, logreg C=0.01",
        lambda r: _single(r) and r.estimator == DEFAULT_ESTIMATOR,
    ),
    Variant(
        "query token only, single layers",
        lambda r: _single(r) and r.spec.kind == "query_token" and r.estimator == DEFAULT_ESTIMATOR,
    ),
    Variant(
        "prompt mean only, single layers",
        lambda r: _single(r) and r.spec.kind == "prompt_mean" and r.estimator == DEFAULT_ESTIMATOR,
    ),
    Variant(
        "several layers concatenated (both kinds)",
        lambda r: not _single(r) and r.estimator == DEFAULT_ESTIMATOR,
    ),
    Variant("single or concatenated (both kinds)", lambda r: r.estimator == DEFAULT_ESTIMATOR),
    Variant(
        "logreg C in {0.001, 0.01, 0.1, 1}, single layers",
        lambda r: _single(r) and r.estimator.name == "logreg",
    ),
    Variant(
        "MLP (64 hidden, alpha 1 or 10), single layers 0, 5, .., 30",
        lambda r: _single(r) and r.estimator.name == "mlp",
    ),
    Variant(
        "bag of embeddings: layer-0 prompt mean",
        lambda r: (
            r.spec.layers == (0,)
            and r.spec.kind == "prompt_mean"
            and r.estimator == DEFAULT_ESTIMATOR
        ),
    ),
    Variant("all of the above, chosen on validation", lambda r: True),
)
# What the facts-trained probes choose among: default, single or concatenated, logreg grid.
FACTS_VARIANTS = (VARIANTS[0], VARIANTS[4], VARIANTS[5])


def grid_sweep(data: ProbeData, seed: int, *, mlp: bool, quick: bool) -> list[SweepRow]:
    """Validation AUROC of every candidate: single layers x logreg grid, [every 5th layer x
    MLPs (a few s per fit on this CPU),] concatenated groups x logreg grid. Test labels are
    not read."""
    layers = list(range(0, data.features.num_layers, 3 if quick else 1))
    if 0 not in layers:
        layers.insert(0, 0)
    rows = sweep(data, layers=layers, estimators=LOGREG_GRID, seed=seed, n_boot=10).rows
    if mlp:
        rows += sweep(data, layers=MLP_LAYERS, estimators=MLP_GRID, seed=seed, n_boot=10).rows
    rows += sweep(
        data, layers=[], concat=CONCAT_GROUPS, estimators=LOGREG_GRID, seed=seed, n_boot=10
    ).rows
    return rows


def refit(data: ProbeData, row: SweepRow, seed: int) -> Probe:
    """The chosen candidate fitted on train and calibrated on validation (as `sweep` does)."""
    spec = row.spec
    single = len(spec.layers) == 1
    result = sweep(
        data,
        kinds=[spec.kind],
        layers=list(spec.layers) if single else [],
        concat=() if single else [spec.layers],
        estimators=[row.estimator],
        seed=seed,
        n_boot=10,
    )
    return result.probe


@dataclass
class VariantResult:
    variant: str
    candidates: int
    chosen: SweepRow
    report: EvalReport  # on --seed
    seed_aurocs: list[float]  # probe test AUROC per split seed


def run_variants(
    train_data: ProbeData,
    test_data: ProbeData,
    seeds: Sequence[int],
    variants: Sequence[Variant],
    *,
    mlp: bool,
    quick: bool,
    n_boot: int,
) -> tuple[list[VariantResult], dict[str, list[float]]]:
    """Each variant chosen on validation per split seed; its test AUROC per seed. Also the
    baselines' test AUROC per seed (on the same test rows)."""
    results: dict[str, VariantResult] = {}
    baselines: dict[str, list[float]] = {"mean_logprob": [], "mean_entropy": []}
    for number, seed in enumerate(seeds):
        started = time.perf_counter()
        rows = grid_sweep(train_data, seed, mlp=mlp, quick=quick)
        for variant in variants:
            kept = [r for r in rows if variant.keep(r)]
            if not kept:
                continue
            chosen = choose(kept)
            probe = refit(train_data, chosen, seed)
            report = evaluate(probe, test_data, n_boot=n_boot if number == 0 else 10, seed=seed)
            if number == 0:
                results[variant.name] = VariantResult(variant.name, len(kept), chosen, report, [])
            if variant.name in results:
                results[variant.name].seed_aurocs.append(report.methods["probe"].auroc)
            if variant is variants[0]:
                for name in baselines:
                    baselines[name].append(report.methods[name].auroc)
        log(f"  split seed {seed}: {len(rows)} candidates in {time.perf_counter() - started:.0f} s")
    return list(results.values()), baselines


# ---------------------------------------------------------------- formatting


def fmt_auroc(m: RiskMetrics) -> str:
    low, high = m.auroc_ci
    return f"{m.auroc:.3f} [{low:.3f}, {high:.3f}]"


def fmt_seconds(s: float) -> str:
    """Seconds in the unit that suits them (a difference may be below zero).

    >>> fmt_seconds(-0.0021), fmt_seconds(0.000178)
    ('-2.1 ms', '178 µs')
    """
    if abs(s) < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if abs(s) < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def mean_sd(values: Sequence[float], spec: str = ".3f") -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_ci(
    y: np.ndarray, probe: np.ndarray, best: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float]:
    """Paired bootstrap 95% CI of (AUROC(probe) - 0.5) / (AUROC(best) - 0.5)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        draw = rng.integers(0, len(y), len(y))
        a, b = auroc(y[draw], probe[draw]), auroc(y[draw], best[draw])
        if not (math.isnan(a) or math.isnan(b)) and b > 0.5:
            values.append((a - 0.5) / (b - 0.5))
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------- per task


def build_items(name: str, args: argparse.Namespace) -> tuple[Task, list[Item]]:
    if name == "arithmetic":
        task = get_task("arithmetic", n=args.arith_n, digits=args.digits)
    else:
        task = get_task(name)
    items = list(task.items)
    if args.quick:
        items = items[:: max(1, len(items) // 90)][:90]
    return task, items


def label_rows(name: str, data: ProbeData, seed: int) -> list[list[object]]:
    split = grouped_split(data.groups, seed=seed)
    keep = usable(data.labels)
    s = summarize_labels(data.labels)
    sizes = "/".join(
        str(int(keep[part].sum())) for part in (split.train, split.validation, split.test)
    )
    return [
        [
            name,
            s.n,
            f"{s.wrong} ({s.wrong / s.n:.0%})",
            f"{s.truncated} ({s.truncated_wrong} wrong)",
            s.included,
            sizes,
        ]
    ]


@dataclass
class Headline:
    """The default sweep's probe against the baselines on the test split of --seed."""

    result: SweepResult
    report: EvalReport
    methods: dict[str, RiskMetrics]  # report's, plus self-consistency on extracted answers
    scores: dict[str, NDArray[np.float64]]  # method -> (T,) risk
    timing: Timing


def measure_headline(
    engine: HFEngine, name: str, data: ProbeData, args: argparse.Namespace
) -> Headline:
    log(f"{name}: default sweep")
    result = sweep(data, seed=args.seed, n_boot=args.n_boot)
    probe = result.probe
    report = evaluate(probe, data, n_boot=args.n_boot, seed=args.seed)
    extracted = evaluate(
        probe, data, normalize=ANSWER_KEYS.get(name, normalize), n_boot=args.n_boot, seed=args.seed
    )
    log(f"{name}: interleaved timing")
    test_prompts = [data.prompts[i] for i in grouped_split(data.groups, seed=args.seed).test]
    prompts = test_prompts[: args.time_prompts]
    timing = time_methods(
        engine,
        prompts,
        data.max_new_tokens,
        RiskScorer(probe),
        args.k,
        args.time_repeats,
        min(SC_BATCH, args.time_prompts),
        args.seed,
    )
    methods = report.methods
    scores = dict(report.scores)
    if "self_consistency" in extracted.methods:
        methods = {**methods, "self_consistency_answer": extracted.methods["self_consistency"]}
        scores["self_consistency_answer"] = extracted.scores["self_consistency"]
    return Headline(result, report, methods, scores, timing)


def headline_rows(h: Headline, name: str, k: int) -> list[list[object]]:
    """One row per method: what it needs, test AUROC, AUPRC, cost per item."""
    methods, timing, chosen = h.methods, h.timing, h.result.chosen
    g = timing.greedy
    rows: list[list[object]] = [
        [
            f"probe `{h.result.probe.spec.name}` ({chosen.estimator.label}, val {chosen.val_auroc:.3f}), separate prefill pass",
            "prompt only",
            fmt_auroc(methods["probe"]),
            f"{methods['probe'].auprc:.3f}",
            fmt_seconds(timing.prefill),
            f"{timing.prefill / g:.1%}",
        ],
        [
            "same probe, captured inside greedy generation",
            "prompt only",
            "same",
            "same",
            fmt_seconds(timing.in_generation),
            f"{timing.in_generation_share:+.1%}",
        ],
    ]
    for method, title in (
        ("mean_logprob", "mean token logprob"),
        ("mean_entropy", "mean token entropy"),
    ):
        rows.append(
            [
                title,
                "greedy answer",
                fmt_auroc(methods[method]),
                f"{methods[method].auprc:.3f}",
                fmt_seconds(g),
                "100%",
            ]
        )
    key = {"capitals": "capitalized words", "arithmetic": "final number"}.get(
        name, "normalized text"
    )
    sampled = (
        (
            "self_consistency",
            f"self-consistency disagreement, K={k} (T={SC_TEMPERATURE}), normalized text",
        ),
        (
            "self_consistency_answer",
            f"self-consistency disagreement, K={k}, answers compared by {key}",
        ),
    )
    for method, title in sampled:
        if method in methods:
            rows.append(
                [
                    title,
                    f"{k} samples",
                    fmt_auroc(methods[method]),
                    f"{methods[method].auprc:.3f}",
                    fmt_seconds(timing.self_consistency),
                    f"{timing.self_consistency / g:.0%}",
                ]
            )
    return rows


def headline_lines(h: Headline, name: str, args: argparse.Namespace) -> list[str]:
    """The methods table and the issue's two targets (AUROC ratio, cost)."""
    report, timing, methods = h.report, h.timing, h.methods
    header = [
        "method",
        "needs",
        "test AUROC [95% CI]",
        "AUPRC",
        "wall time / item",
        "cost vs greedy answer",
    ]
    out = [
        f"Test split: {report.n_test} items ({report.labels.wrong} wrong of {report.labels.n}; "
        f"{report.labels.truncated} truncated, excluded). Costs measured interleaved in this run: "
        f"greedy and probe on {timing.prompts} test prompts (one batch), K samples on {timing.sc_prompts}, "
        f"median of {timing.repeats} repeats.",
        "",
        table(header, headline_rows(h, name, args.k)),
        "",
    ]
    post = {n: m for n, m in methods.items() if n != "probe"}
    best = max(post, key=lambda n: post[n].auroc)
    ratio = (methods["probe"].auroc - 0.5) / (post[best].auroc - 0.5)
    low, high = ratio_ci(report.y, h.scores["probe"], h.scores[best], args.n_boot, args.seed)
    g = timing.greedy
    out += [
        f"- Target ratio (probe AUROC - 0.5) / (best post-generation AUROC - 0.5), best = `{best}`: "
        f"**{ratio:.0%}** (paired bootstrap 95% CI {low:.0%} to {high:.0%}; target >= 90%).",
        f"- Probe cost vs the cheapest generation-based baseline (one greedy answer, {fmt_seconds(g)}/item): "
        f"separate prefill pass **{timing.prefill / g:.1%}**; captured inside generation "
        f"**{timing.in_generation_share:+.1%}** (greedy generation with prefill capture and the "
        f"probe scoring each prompt vs the same generation without either, interleaved, median of "
        f"{timing.repeats} repeats; per repeat {timing.probe_range[0]:+.1%} to "
        f"{timing.probe_range[1]:+.1%}, the shared CPU's noise). Target <= 5%. The same on a "
        "32-prompt batch of the default model: `python -m benchmarks.engine --only capture`.",
        "",
    ]
    return out


def variant_lines(
    variants: Sequence[VariantResult],
    base: dict[str, list[float]],
    report: EvalReport,
    args: argparse.Namespace,
    seeds: Sequence[int],
) -> list[str]:
    """Each variant's choice and test AUROC (seed --seed with CI, then over split seeds),
    and the baselines' on the same test rows."""
    rows: list[list[object]] = []
    for v in variants:
        m = v.report.methods["probe"]
        rows.append(
            [
                v.variant,
                v.candidates,
                f"`{v.chosen.spec.name}`",
                v.chosen.estimator.label,
                f"{v.chosen.val_auroc:.3f}",
                fmt_auroc(m),
                f"{m.auprc:.3f}",
                mean_sd(v.seed_aurocs),
            ]
        )
    for bname in base:
        rows.append(
            [
                f"baseline: {bname.replace('_', ' ')} (post-generation)",
                "-",
                "-",
                "-",
                "-",
                fmt_auroc(report.methods[bname]),
                f"{report.methods[bname].auprc:.3f}",
                mean_sd(base[bname]),
            ]
        )
    header = [
        "variant",
        "candidates",
        "chosen feature",
        "estimator",
        "val AUROC",
        f"test AUROC seed {args.seed} [95% CI]",
        "AUPRC",
        "test AUROC over seeds",
    ]
    return [
        f"Variants (each chosen on validation only; test scored once per split seed; seed {args.seed} with CI, "
        f"then the mean ± sd of test AUROC over split seeds {seeds[0]}..{seeds[-1]}):",
        "",
        table(header, rows),
        "",
    ]


def seed_ratio_lines(
    variants: Sequence[VariantResult], base: dict[str, list[float]], seed: int
) -> list[str]:
    """The target ratio per split seed of the default and the all-candidates probe."""
    best_post = [max(a, b) for a, b in zip(base["mean_logprob"], base["mean_entropy"], strict=True)]
    rows = []
    for v in variants:
        if not v.variant.startswith(("default", "all of")):
            continue
        per_seed = [(p - 0.5) / (b - 0.5) for p, b in zip(v.seed_aurocs, best_post, strict=True)]
        rows.append([v.variant, mean_sd(per_seed, ".0%"), " ".join(f"{r:.0%}" for r in per_seed)])
    return [
        f"Target ratio per split seed vs the better of logprob / entropy on that seed's test split "
        f"(self-consistency was sampled for seed {seed} only):",
        "",
        table(["probe", "ratio, mean ± sd over seeds", "per seed"], rows),
        "",
    ]


def task_section(
    engine: HFEngine, name: str, args: argparse.Namespace, cache: Path
) -> tuple[ProbeData, list[str], list[VariantResult]]:
    task, items = build_items(name, args)
    label = name if name != "arithmetic" else f"arithmetic-d{args.digits}"
    data, folder = cached_collect(engine, task, items, cache, label)
    split = grouped_split(data.groups, seed=args.seed)
    data = ensure_samples(engine, data, split.test.tolist(), args.k, args.seed, folder)
    out = [
        f"## Task `{name}`",
        "",
        f"Labels ({task.description}; {data.max_new_tokens} new tokens; truncated answers excluded; "
        f"split by group, seed {args.seed}):",
        "",
        table(
            ["task", "items", "wrong", "truncated", "used", "train/val/test used"],
            label_rows(name, data, args.seed),
        ),
        "",
    ]
    headline = measure_headline(engine, name, data, args)
    out += headline_lines(headline, name, args)
    log(f"{name}: variants over {args.split_seeds} split seeds")
    seeds = [args.seed + i for i in range(args.split_seeds)]
    variants, base = run_variants(
        data, data, seeds, VARIANTS, mlp=True, quick=args.quick, n_boot=args.n_boot
    )
    out += variant_lines(variants, base, headline.report, args, seeds)
    out += seed_ratio_lines(variants, base, args.seed)
    return data, out, variants


def facts_label_rows(
    facts: ProbeData, attributes: Sequence[str], capitals: ProbeData
) -> list[list[object]]:
    """Label counts per fact attribute, then the capitals task's."""
    rows: list[list[object]] = []
    for attribute in FACT_ATTRIBUTES:
        labs = [lab for lab, a in zip(facts.labels, attributes, strict=True) if a == attribute]
        s = summarize_labels(labs)
        rows.append(
            [attribute, s.n, f"{s.wrong} ({s.wrong / max(s.n, 1):.0%})", s.truncated, s.included]
        )
    s = summarize_labels(capitals.labels)
    rows.append(
        [
            "capital (the capitals task)",
            s.n,
            f"{s.wrong} ({s.wrong / s.n:.0%})",
            s.truncated,
            s.included,
        ]
    )
    return rows


def facts_training_data(
    capitals: ProbeData, facts: ProbeData, seed: int, with_capitals: bool
) -> ProbeData:
    """Capitals rows (all splits: only train is fitted, validation chooses, test unread)
    plus the facts of train-split countries; the other countries' facts are dropped."""
    split_c = grouped_split(capitals.groups, seed=seed)
    train_groups = {capitals.groups[i] for i in split_c.train}
    keep_facts = [i for i, g in enumerate(facts.groups) if g in train_groups]
    keep_caps = (
        sorted(split_c.train.tolist() + split_c.validation.tolist())
        if with_capitals
        else split_c.validation.tolist()
    )
    merged = ProbeData.concat(
        [capitals.subset(keep_caps), facts.subset(keep_facts)], "capitals+facts"
    )
    m_split = grouped_split(merged.groups, seed=seed)
    test_groups = {capitals.groups[i] for i in split_c.test}
    val_groups = {capitals.groups[i] for i in split_c.validation}
    fitted = {merged.groups[i] for i in m_split.train}
    assert not fitted & test_groups, "a capitals test country is in the training facts"
    assert not fitted & val_groups, "a capitals validation country is in the training facts"
    assert {merged.groups[i] for i in m_split.validation} <= val_groups
    assert len(m_split.test) == 0
    return merged


def facts_variants(
    capitals: ProbeData,
    facts: ProbeData,
    with_capitals: bool,
    seeds: Sequence[int],
    args: argparse.Namespace,
) -> tuple[int, list[VariantResult]]:
    """Rows fitted on (first seed) and each facts variant chosen and tested per split seed."""
    per_seed: dict[str, VariantResult] = {}
    fitted = 0
    for number, seed in enumerate(seeds):
        train = facts_training_data(capitals, facts, seed, with_capitals)
        if number == 0:
            fitted = int(usable(train.labels)[grouped_split(train.groups, seed=seed).train].sum())
        results, _ = run_variants(
            train,
            capitals,
            [seed],
            FACTS_VARIANTS,
            mlp=False,
            quick=args.quick,
            n_boot=args.n_boot if number == 0 else 10,
        )
        for r in results:
            if r.variant in per_seed:
                per_seed[r.variant].seed_aurocs += r.seed_aurocs
            else:
                per_seed[r.variant] = r
    return fitted, list(per_seed.values())


def facts_row(title: str, fitted: int, r: VariantResult) -> list[object]:
    return [
        title,
        fitted,
        r.variant,
        f"`{r.chosen.spec.name}`",
        r.chosen.estimator.label,
        f"{r.chosen.val_auroc:.3f}",
        fmt_auroc(r.report.methods["probe"]),
        mean_sd(r.seed_aurocs),
    ]


def facts_section(
    engine: Engine,
    capitals: ProbeData,
    capitals_variants: Sequence[VariantResult],
    args: argparse.Namespace,
    cache: Path,
) -> list[str]:
    facts_task = get_task("facts", attributes=list(FACT_ATTRIBUTES))
    capital_groups = set(capitals.groups)
    items = [item for item in facts_task.items if item.group in capital_groups]
    if args.quick:
        items = items[::3]
    facts, _ = cached_collect(engine, facts_task, items, cache, "facts")
    counts = facts_label_rows(facts, [item.meta["attribute"] for item in items], capitals)
    out = [
        "## Probe trained on more country facts, tested on capitals",
        "",
        "Facts labels (every country of the capitals task; only train-split countries are fitted on):",
        "",
        table(["attribute", "items", "wrong", "truncated", "used"], counts),
        "",
    ]
    seeds = [args.seed + i for i in range(args.split_seeds)]
    names = {v.name for v in FACTS_VARIANTS}
    split0 = grouped_split(capitals.groups, seed=args.seed)
    capitals_fitted = int(usable(capitals.labels)[split0.train].sum())
    rows = [
        facts_row("capitals only (as in the variants table)", capitals_fitted, r)
        for r in capitals_variants
        if r.variant in names
    ]
    setups = {
        "capitals + facts (train countries)": True,
        "facts only (train countries); capitals validation chooses": False,
    }
    for title, with_capitals in setups.items():
        log(f"facts: {title}")
        fitted, results = facts_variants(capitals, facts, with_capitals, seeds, args)
        rows += [facts_row(title, fitted, r) for r in results]
    header = [
        "training data",
        f"fitted rows (seed {args.seed})",
        "candidate set",
        "chosen feature",
        "estimator",
        "val AUROC (capitals)",
        f"test AUROC seed {args.seed} [95% CI]",
        "test AUROC over seeds",
    ]
    out += [
        "Tested on the capitals test split. Validation (the choice of feature and estimator) = capitals "
        "questions of validation countries only; fitted rows = train-split countries only (asserted per seed):",
        "",
        table(header, rows),
        "",
    ]
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="capitals,arithmetic")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--arith-n", type=int, default=320)
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--k", type=int, default=5, help="samples for self-consistency")
    parser.add_argument("--seed", type=int, default=0, help="split seed of the main tables")
    parser.add_argument(
        "--split-seeds",
        type=int,
        default=None,
        help="split seeds averaged in the variant tables (default 5, quick 2)",
    )
    parser.add_argument(
        "--time-prompts",
        type=int,
        default=None,
        help="prompts per timing batch (default 32, quick 8)",
    )
    parser.add_argument(
        "--time-repeats",
        type=int,
        default=None,
        help="interleaved timing repeats (default 3, quick 1)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=None, help="bootstrap resamples (default 1000, quick 200)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the engine's)"
    )
    parser.add_argument("--no-facts", action="store_true", help="skip the facts-trained probe")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="~90 items per task, fewer layers/seeds/repeats: a smoke run",
    )
    args = parser.parse_args(argv)
    args.split_seeds = args.split_seeds or (2 if args.quick else 5)
    args.time_prompts = args.time_prompts or (8 if args.quick else 32)
    args.time_repeats = args.time_repeats or (1 if args.quick else 3)
    args.n_boot = args.n_boot or (200 if args.quick else 1000)
    return args


def main() -> None:
    args = parse_args()
    cache = args.cache / ("quick" if args.quick else "full")
    started = time.perf_counter()
    engine = load_model(args.model)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    print(f"# Probe benchmark: `{engine.name}` (fingerprint {engine.fingerprint})\n")
    print(
        f"torch threads {torch.get_num_threads()}; K={args.k}; seed {args.seed}; split seeds {args.split_seeds}; "
        f"{'quick' if args.quick else 'full'} run\n"
    )
    sections: dict[str, tuple[ProbeData, list[VariantResult]]] = {}
    for name in names:
        data, lines, variants = task_section(engine, name, args, cache)
        print("\n".join(lines), flush=True)
        sections[name] = (data, variants)
    if "capitals" in sections and not args.no_facts:
        lines = facts_section(engine, *sections["capitals"], args, cache)
        print("\n".join(lines), flush=True)
    print(
        f"Wall time {time.perf_counter() - started:.0f} s (greedy answers, features and samples cached in {cache})."
    )


if __name__ == "__main__":
    main()
