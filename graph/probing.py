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
from probes.runtime import RiskScorer
from probes.split import grouped_split
from probes.sweep import collect, sweep
from tasks.base import Item, Task


@dataclass(frozen=True)
class FittedProbe:
    name: str | None  # artifact name; None when no probe could be fitted
    val_auroc: float | None
    val_ece: float | None
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
        return FittedProbe(None, None, None, f"none ({error})", Thresholds())
    index = (
        len(list((bench.root / "probes").glob("probe-*")))
        if (bench.root / "probes").exists()
        else 0
    )
    name = f"probes/probe-{index}"
    folder = result.probe.save(bench.root / name)
    bench.artifacts.add_dir(name, Path(folder), kind="probe")
    split = grouped_split(data.groups, seed=probe_seed).restrict(usable(data.labels))
    risks = RiskScorer(result.probe).score(
        data.features.matrix(result.probe.spec)[split.validation]
    )
    wrong = label_array(data.labels)[split.validation]
    thresholds = choose_thresholds(
        list(map(float, risks)), [not bool(w) for w in wrong], target_precision
    )
    auroc = result.validation.auroc
    emit(
        "artifact",
        f"probe saved: {name}",
        name=name,
        feature=result.chosen.spec.name,
        val_auroc=auroc,
    )
    description = f"{result.chosen.spec.name}, validation AUROC {auroc:.3f}"
    return FittedProbe(name, auroc, result.validation.ece, description, thresholds)


@lru_cache(maxsize=8)
def _load(path: str) -> Probe:
    return load_probe(path)


def attach_probe(bench: Workbench, engine: Engine, name: str | None) -> None:
    """Score every generation of `engine` with the probe. The probe may have been fitted on
    an earlier version: that is how the monitor measures its drift on the new model."""
    engine.risk_fn = RiskScorer(_load(str(bench.root / name))) if name else None
