"""The session's probe: fitted on train-split items of the current model, saved as an
artifact, attached to engines so every generation carries its pre-generation risk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agents.refine import Thresholds, choose_thresholds
from engines.base import Engine
from graph.events import Emitter
from graph.workbench import Workbench
from probes.artifact import Probe, load_probe
from probes.labels import label_array, usable
from probes.metrics import auroc_and_ece
from probes.runtime import RiskScorer
from probes.split import grouped_split
from probes.sweep import collect, sweep
from tasks.base import Item, Task


@dataclass(frozen=True)
class FittedProbe:
    name: str | None  # artifact name; None when no probe could be fitted
    val_auroc: float | None  # of the chosen candidate, on the split it was chosen on
    val_ece: float | None
    held_out_auroc: float | None  # on the probe's own test rows: the honest number at fit
    held_out_ece: float | None
    description: str
    thresholds: Thresholds


def fit_session_probe(
    bench: Workbench,
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int,
    target_precision: float,
    seed: int,
    index: int,
    emit: Emitter,
) -> FittedProbe:
    """Greedy answers on `items` (train split), a layer x feature sweep chosen on the
    probe's own validation split, refine thresholds from that same validation split.

    The items all sit in the task's train split for `seed`, so the probe splits them with
    another seed: its validation and test rows are train items the probe never fitted on."""
    probe_seed = seed + 1
    data = collect(
        engine,
        task,
        items,
        max_new_tokens=max_new_tokens,
        progress_cb=emit.progress("probe answers"),
    )
    try:
        result = sweep(data, seed=probe_seed, n_boot=200)
    except ValueError as error:  # e.g. every answer right (or wrong): nothing to learn
        emit("error", f"no probe fitted: {error}")
        return FittedProbe(None, None, None, None, None, f"none ({error})", Thresholds())
    name = f"probes/probe-{index}"
    folder = result.probe.save(bench.root / name)
    bench.artifacts.add_dir(name, Path(folder), kind="probe")
    split = grouped_split(data.groups, seed=probe_seed).restrict(usable(data.labels))
    scorer, matrix, y = (
        RiskScorer(result.probe),
        data.features.matrix(result.probe.spec),
        label_array(data.labels),
    )
    risks = scorer.score(matrix[split.validation])
    thresholds = choose_thresholds(
        list(map(float, risks)), [not bool(w) for w in y[split.validation]], target_precision
    )
    # the monitor's drift baseline: rows the sweep never read (the validation AUROC is the
    # best of many candidates on a small split, so it overstates the probe on new data)
    held_out_auroc, held_out_ece = auroc_and_ece(y[split.test], scorer.score(matrix[split.test]))
    auroc = result.validation.auroc
    emit(
        "artifact",
        f"probe saved: {name}",
        name=name,
        feature=result.chosen.spec.name,
        val_auroc=auroc,
    )
    description = f"{result.chosen.spec.name}, validation AUROC {auroc:.3f}" + (
        f", held-out AUROC {held_out_auroc:.3f} (n={len(split.test)})"
        if held_out_auroc is not None
        else ""
    )
    return FittedProbe(
        name,
        auroc,
        result.validation.ece,
        held_out_auroc,
        held_out_ece,
        description,
        thresholds,
    )


@lru_cache(maxsize=8)
def _load(path: str) -> Probe:
    return load_probe(path)


def attach_probe(bench: Workbench, engine: Engine, name: str | None) -> None:
    """Score every generation of `engine` with the probe. The probe may have been fitted on
    an earlier version: that is how the monitor measures its drift on the new model."""
    engine.risk_fn = RiskScorer(_load(str(bench.root / name))) if name else None
