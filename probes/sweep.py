"""What `autodidact probe sweep | eval | score` run: collect, sweep, evaluate, plot.

    data = collect(engine, task)                      # greedy answers + their prefill states
    result = sweep(data)                              # validation-only choice of feature
    result.probe.save(run / "probe"); plot_sweep(result, run / "sweep.png")

    probe = load_probe(path, expected_fingerprint=engine.fingerprint)
    data = collect(engine, task, held_out_items(task, probe))
    data = sample_consistency(engine, data, k=5)      # the self-consistency baseline
    report = evaluate(probe, data); plot_roc(report, run / "roc.png")

The test split is scored only by `evaluate`, after the sweep has chosen and saved a probe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engines.base import FEATURE_KINDS, Engine, Generation, ProgressFn
from probes.artifact import Probe, ProbeCard, SplitInfo, check_fingerprint, check_template
from probes.baselines import disagreement_risk
from probes.calibration import CalibrationMethod, fit_calibrator
from probes.features import FeatureSet, FeatureSpec, prompt_template_hash
from probes.fit import (
    EstimatorConfig,
    LabelledRows,
    SweepRow,
    choose,
    export_weights,
    fit_estimator,
    validation_table,
)
from probes.labels import (
    Label,
    LabelSummary,
    label_array,
    label_generations,
    summarize_labels,
    usable,
)
from probes.metrics import RiskMetrics, risk_metrics, roc_curve_points
from probes.runtime import RiskScorer, probe_logits
from probes.split import DEFAULT_FRACTIONS, grouped_split
from tasks.base import Item, Task, split_of
from tasks.verifiers import normalize as normalize_answer

DATA_SCHEMA_VERSION = 1


@dataclass
class ProbeData:
    """One task's items with the model's greedy answers, labels, prefill features and the
    inputs of the baselines; rows aligned across every field."""

    task: str
    max_new_tokens: int
    item_ids: list[str]
    groups: list[str]
    prompts: list[str]
    features: FeatureSet
    labels: list[Label]
    mean_logprob: NDArray[np.float64]  # (N,) of the greedy answer
    mean_entropy: NDArray[np.float64]  # (N,)
    consistency: dict[str, list[str]] = field(default_factory=dict)  # item id -> K answers
    timing: dict[str, float] = field(default_factory=dict)  # method -> seconds per item

    def __len__(self) -> int:
        return len(self.item_ids)

    def save(self, folder: str | Path) -> Path:
        """`features/` (FeatureSet), `items.jsonl` (one row per item), `data.json` last."""
        folder = Path(folder)
        self.features.save(folder / "features")
        rows = [
            {
                "id": item_id,
                "group": group,
                "prompt": prompt,
                "wrong": label.wrong,
                "finish_reason": label.finish_reason,
                "answer": label.answer,
                "mean_logprob": float(lp),
                "mean_entropy": float(ent),
                "samples": self.consistency.get(item_id),
            }
            for item_id, group, prompt, label, lp, ent in zip(
                self.item_ids,
                self.groups,
                self.prompts,
                self.labels,
                self.mean_logprob,
                self.mean_entropy,
                strict=True,
            )
        ]
        (folder / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        meta = {
            "schema_version": DATA_SCHEMA_VERSION,
            "task": self.task,
            "max_new_tokens": self.max_new_tokens,
            "timing_s_per_item": self.timing,
        }
        (folder / "data.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ProbeData:
        folder = Path(folder)
        meta = json.loads((folder / "data.json").read_text())
        if meta.get("schema_version") != DATA_SCHEMA_VERSION:
            raise ValueError(
                f"{folder}/data.json: schema_version {meta.get('schema_version')!r}; re-collect"
            )
        rows = [
            json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line
        ]
        features = FeatureSet.load(folder / "features")
        if features.item_ids != [row["id"] for row in rows]:
            raise ValueError(f"{folder}: features and items.jsonl list different items; re-collect")
        return cls(
            task=meta["task"],
            max_new_tokens=meta["max_new_tokens"],
            item_ids=[row["id"] for row in rows],
            groups=[row["group"] for row in rows],
            prompts=[row["prompt"] for row in rows],
            features=features,
            labels=[
                Label(row["id"], row["wrong"], row["finish_reason"], row["answer"]) for row in rows
            ],
            mean_logprob=np.array([row["mean_logprob"] for row in rows], dtype=np.float64),
            mean_entropy=np.array([row["mean_entropy"] for row in rows], dtype=np.float64),
            consistency={row["id"]: row["samples"] for row in rows if row.get("samples")},
            timing=dict(meta.get("timing_s_per_item", {})),
        )


def _batches(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, max(size, 1))]


def collect(
    engine: Engine,
    task: Task,
    items: Sequence[Item] | None = None,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    prefill_timing_prompts: int = 32,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """Greedy answers with prefill capture (one pass per prompt batch), verifier labels,
    and the greedy answer's mean logprob and entropy. `timing` gets seconds per item of
    greedy generation and, on the first `prefill_timing_prompts` prompts, of a standalone
    prefill (what the probe costs when run before, not during, generation)."""
    chosen = list(task.items if items is None else items)
    if not chosen:
        raise ValueError(f"task {task.name!r}: no items to collect")
    budget = max_new_tokens or task.max_new_tokens
    prompts = [item.prompt for item in chosen]
    generations: list[Generation] = []
    started = time.perf_counter()
    for part in _batches(len(prompts), batch_size):
        generations += engine.generate(
            prompts[part], temperature=0.0, max_new_tokens=budget, capture=True
        )
        if progress_cb:
            progress_cb(len(generations), len(prompts))
    timing = {"greedy_generation": (time.perf_counter() - started) / len(prompts)}
    states = [g.states for g in generations if g.states is not None]
    if len(states) < len(generations):  # an engine that cannot capture during generation
        states = list(engine.hidden_states(prompts))
    if prefill_timing_prompts > 0:
        timed = prompts[:prefill_timing_prompts]
        started = time.perf_counter()
        engine.hidden_states(timed)
        timing["prefill_only"] = (time.perf_counter() - started) / len(timed)
    features = FeatureSet.from_states(
        states,
        [item.id for item in chosen],
        fingerprint=engine.fingerprint,
        template_hash=prompt_template_hash(engine),
        model_name=engine.name,
    )
    greedy = [g.samples[0] for g in generations]
    return ProbeData(
        task=task.name,
        max_new_tokens=budget,
        item_ids=[item.id for item in chosen],
        groups=[item.group for item in chosen],
        prompts=prompts,
        features=features,
        labels=label_generations(task, chosen, generations),
        mean_logprob=np.array([s.mean_logprob for s in greedy], dtype=np.float64),
        mean_entropy=np.array([s.mean_entropy for s in greedy], dtype=np.float64),
        timing=timing,
    )


def sample_consistency(
    engine: Engine,
    data: ProbeData,
    *,
    k: int = 5,
    temperature: float = 0.7,
    rows: Sequence[int] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """K sampled answers at temperature T > 0 for `rows` (default: all), for the
    self-consistency baseline; timing["self_consistency"] = seconds per item."""
    if k < 2 or temperature <= 0:
        raise ValueError("self-consistency needs k >= 2 samples at temperature > 0")
    chosen = list(range(len(data)) if rows is None else rows)
    prompts = [data.prompts[i] for i in chosen]
    answers: dict[str, list[str]] = dict(data.consistency)
    started = time.perf_counter()
    done = 0
    for part in _batches(len(prompts), batch_size):
        generations = engine.generate(
            prompts[part],
            n=k,
            temperature=temperature,
            max_new_tokens=max_new_tokens or data.max_new_tokens,
            seed=seed + part.start,
            capture=False,
        )
        for row, generation in zip(chosen[part], generations, strict=True):
            answers[data.item_ids[row]] = [sample.text for sample in generation.samples]
        done += len(generations)
        if progress_cb:
            progress_cb(done, len(prompts))
    timing = {
        **data.timing,
        "self_consistency": (time.perf_counter() - started) / max(len(prompts), 1),
    }
    return replace(data, consistency=answers, timing=timing)


def candidate_specs(
    num_layers: int,
    *,
    kinds: Sequence[str] = FEATURE_KINDS,
    layers: Sequence[int] | None = None,
    concat: Sequence[Sequence[int]] = (),
) -> list[FeatureSpec]:
    """Every single layer (default: all L+1) for each kind, plus each concatenation.

    >>> [s.name for s in candidate_specs(2, kinds=["query_token"], concat=[(0, 1)])]
    ['layer.0.query_token', 'layer.1.query_token', 'layer.0+1.query_token']
    """
    singles = range(num_layers) if layers is None else layers
    return [FeatureSpec(kind, (layer,)) for kind in kinds for layer in singles] + [
        FeatureSpec(kind, tuple(group)) for kind in kinds for group in concat
    ]


@dataclass
class SweepResult:
    rows: list[SweepRow]  # every candidate, in sweep order
    chosen: SweepRow
    probe: Probe  # the chosen candidate, fitted on train, calibrated on validation
    split_sizes: dict[str, int]
    labels: LabelSummary
    validation: RiskMetrics  # of the chosen probe; its ECE is in-sample for the calibrator

    def table(self) -> list[dict[str, object]]:
        return [row.to_json() | {"chosen": row == self.chosen} for row in self.rows]

    def to_json(self) -> dict[str, object]:
        return {
            "chosen": self.chosen.to_json(),
            "split_sizes": self.split_sizes,
            "labels": vars(self.labels),
            "validation": self.validation.to_json(),
            "table": self.table(),
        }


def sweep(
    data: ProbeData,
    *,
    kinds: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    concat: Sequence[Sequence[int]] = (),
    estimators: Sequence[EstimatorConfig] = (EstimatorConfig(),),
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    calibration: CalibrationMethod = "platt",
    include_truncated: bool = False,
    n_boot: int = 1000,
) -> SweepResult:
    """Fit every candidate on train, choose by validation AUROC, calibrate the choice on
    validation. Test labels are never read (only `evaluate` scores the test split)."""
    y = label_array(data.labels)  # (N,)
    split = grouped_split(data.groups, seed=seed, fractions=fractions)
    split = split.restrict(usable(data.labels, include_truncated=include_truncated))
    train = LabelledRows(split.train, y[split.train])
    validation = LabelledRows(split.validation, y[split.validation])
    for name, part in (("train", train), ("validation", validation)):
        if len(np.unique(part.y)) < 2:
            raise ValueError(
                f"the {name} split has {len(part.y)} labelled items of one class only: "
                "collect more items or change --seed"
            )
    specs = candidate_specs(
        data.features.num_layers, kinds=kinds or data.features.kinds, layers=layers, concat=concat
    )
    rows = validation_table(data.features, specs, estimators, train, validation)
    chosen = choose(rows)
    matrix = data.features.matrix(chosen.spec)  # (N, D)
    weights = export_weights(fit_estimator(matrix[train.rows], train.y, chosen.estimator))
    val_logits = probe_logits(weights, matrix[validation.rows])  # (V,)
    calibrator = fit_calibrator(val_logits, validation.y, calibration)
    metrics = risk_metrics(
        validation.y, val_logits, prob=calibrator(val_logits), n_boot=n_boot, seed=seed
    )
    labels = summarize_labels(data.labels, include_truncated=include_truncated)
    card = ProbeCard(
        model_name=data.features.model_name,
        fingerprint=data.features.fingerprint,
        template_hash=data.features.template_hash,
        feature=chosen.spec.name,
        layers=list(chosen.spec.layers),
        feature_kind=chosen.spec.kind,
        input_dim=int(matrix.shape[1]),
        estimator=chosen.estimator.name,
        hyperparameters=chosen.estimator.hyperparameters(),
        task=data.task,
        max_new_tokens=data.max_new_tokens,
        split=SplitInfo(seed=seed, fractions=fractions, sizes=split.sizes()),
        labels=vars(labels),
        metrics={"validation": metrics.to_json()},
        calibration=calibrator.to_json(),
    )
    return SweepResult(rows, chosen, Probe(card, weights), split.sizes(), labels, metrics)


def held_out_items(task: Task, probe: Probe) -> list[Item]:
    """The task's items in the probe's test split (same seeded grouped hash)."""
    info = probe.card.split
    return [
        item for item in task.items if split_of(item.group, info.seed, info.fractions) == "test"
    ]


@dataclass
class EvalReport:
    feature: str
    n_test: int
    labels: LabelSummary  # of the test items
    methods: dict[str, RiskMetrics]  # "probe" and each baseline
    cost_s_per_item: dict[str, float]  # what each method costs per item
    y: NDArray[np.int64]  # (T,) test labels
    scores: dict[str, NDArray[np.float64]]  # method -> (T,) risk

    def table(self) -> list[dict[str, object]]:
        return [
            {"method": name, **metrics.to_json(), "cost_s_per_item": self.cost_s_per_item.get(name)}
            for name, metrics in self.methods.items()
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "n_test": self.n_test,
            "labels": vars(self.labels),
            "methods": self.table(),
            "cost_s_per_item": self.cost_s_per_item,
        }


def evaluate(
    probe: Probe,
    data: ProbeData,
    *,
    include_truncated: bool = False,
    normalize: Callable[[str], str] = normalize_answer,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Test-split metrics of the probe and of the baselines on the same items, with their
    cost per item. Rows of `data` outside the probe's test split are ignored; the
    self-consistency baseline is included when every test item has sampled answers."""
    check_fingerprint(probe.card, data.features.fingerprint, where="probe")
    check_template(probe.card, data.features.template_hash, where="probe")
    info = probe.card.split
    split = grouped_split(data.groups, seed=info.seed, fractions=info.fractions)
    rows = split.test[usable(data.labels, include_truncated=include_truncated)[split.test]]
    if len(rows) == 0:
        raise ValueError("no labelled items of the probe's test split in this data")
    y = label_array(data.labels)[rows]  # (T,)
    scorer = RiskScorer(probe)
    matrix = data.features.matrix(probe.spec)[rows]  # (T, D)
    started = time.perf_counter()
    for row in matrix:
        scorer.score(row)
    score_seconds = (time.perf_counter() - started) / len(rows)
    scores = {
        "probe": scorer.score(matrix),
        "mean_logprob": -data.mean_logprob[rows],
        "mean_entropy": data.mean_entropy[rows],
    }
    costs = {
        "probe": data.timing.get("prefill_only", float("nan")) + score_seconds,
        "probe_in_generation": score_seconds,
        "mean_logprob": data.timing.get("greedy_generation", float("nan")),
        "mean_entropy": data.timing.get("greedy_generation", float("nan")),
    }
    sampled = [data.consistency.get(data.item_ids[row], []) for row in rows]
    if all(sampled):
        scores["self_consistency"] = np.array([disagreement_risk(s, normalize) for s in sampled])
        costs["self_consistency"] = data.timing.get("self_consistency", float("nan"))
    methods = {
        name: risk_metrics(
            y, risk, prob=risk if name == "probe" else None, n_boot=n_boot, seed=seed
        )
        for name, risk in scores.items()
    }
    test_labels = [data.labels[row] for row in split.test]
    return EvalReport(
        feature=probe.spec.name,
        n_test=len(rows),
        labels=summarize_labels(test_labels, include_truncated=include_truncated),
        methods=methods,
        cost_s_per_item=costs,
        y=y,
        scores=scores,
    )


def score_prompts(engine: Engine, probe: Probe, prompts: Sequence[str]) -> list[float]:
    """Risk of each prompt from one prefill (for `autodidact probe score`)."""
    check_fingerprint(probe.card, engine.fingerprint, where="probe")
    check_template(probe.card, prompt_template_hash(engine), where="probe")
    scorer = RiskScorer(probe)
    return [scorer(states) for states in engine.hidden_states(prompts)]


def plot_sweep(result: SweepResult, png_path: str | Path) -> Path:
    """Validation (solid) and train (dotted) AUROC per layer, one line per feature kind and
    estimator; the chosen candidate starred."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    series = sorted({(row.spec.kind, row.estimator.label) for row in result.rows})
    for kind, label in series:
        single = [
            r
            for r in result.rows
            if len(r.spec.layers) == 1 and (r.spec.kind, r.estimator.label) == (kind, label)
        ]
        layers = [r.spec.layers[0] for r in single]
        (line,) = axes.plot(
            layers, [r.val_auroc for r in single], marker=".", label=f"{kind} {label}"
        )
        axes.plot(
            layers,
            [r.train_auroc for r in single],
            linestyle=":",
            color=line.get_color(),
            alpha=0.6,
        )
    chosen = result.chosen
    axes.plot(
        chosen.spec.layers[-1],
        chosen.val_auroc,
        marker="*",
        markersize=16,
        color="black",
        linestyle="none",
        label=f"chosen: {chosen.spec.name} {chosen.estimator.label} ({chosen.val_auroc:.3f})",
    )
    axes.axhline(0.5, color="grey", linewidth=0.8)
    axes.set(xlabel="layer (0 = embeddings)", ylabel="AUROC (validation solid, train dotted)")
    axes.set_title(f"probe sweep, validation n={result.split_sizes['validation']}")
    axes.legend(fontsize=8)
    figure.savefig(png_path, dpi=120)
    return Path(png_path)


def plot_roc(report: EvalReport, png_path: str | Path) -> Path:
    """Test ROC curve of the probe and each baseline, AUROC with its 95% CI in the legend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axes = figure.subplots()
    for name, risk in report.scores.items():
        fpr, tpr = roc_curve_points(report.y, risk)
        metrics = report.methods[name]
        low, high = metrics.auroc_ci
        axes.plot(fpr, tpr, label=f"{name} {metrics.auroc:.3f} [{low:.2f}, {high:.2f}]")
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    axes.set(xlabel="false positive rate", ylabel="true positive rate (wrong answers caught)")
    axes.set_title(f"test ROC, n={report.n_test}, probe {report.feature}")
    axes.legend(fontsize=8, loc="lower right")
    figure.savefig(png_path, dpi=120)
    return Path(png_path)
