"""Probe: the session's hallucination-risk probe, fitted on the current model's greedy
answers to train-split items, saved in the session's folder, attached to engines so that
every generation carries its pre-generation risk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from agents.config import StageConfig
from engines.base import Engine, ProgressFn
from probes.calibration import Thresholds, choose_thresholds
from tasks.base import Item, Task

if TYPE_CHECKING:
    from probes.artifact import Probe


class ProbePolicy(StageConfig):
    """Probe: the hallucination-risk probe fitted on the current model's train-split answers."""

    items: int = Field(
        default=96, ge=8, description="Train-split items answered greedily to fit the probe."
    )
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Token budget of those answers (null: evaluate.max_new_tokens). Labels from a "
        "smaller budget teach the probe truncation, not hallucination.",
    )


@dataclass(frozen=True)
class FittedProbe:
    """What one fit produced: the probe (None when none could be fitted, with the reason)."""

    name: str | None  # artifact name; None when no probe could be fitted
    feature: str | None  # the chosen feature (layer and kind)
    val_auroc: float | None  # of the chosen candidate, on the split it was chosen on
    val_ece: float | None
    held_out_auroc: float | None  # on the probe's own test rows: the honest number at fit
    held_out_ece: float | None
    description: str
    thresholds: Thresholds
    error: str | None = None  # why no probe was fitted


def probe_artifact_name(fits: int) -> str:
    """The artifact folder of the session's `fits`-th probe (a resumed fit overwrites its
    own folder instead of orphaning one).

    >>> probe_artifact_name(0)
    'probes/probe-0'
    """
    return f"probes/probe-{fits}"


def fit_session_probe(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    *,
    name: str,
    folder: Path,
    max_new_tokens: int,
    target_precision: float,
    seed: int,
    on_progress: ProgressFn | None = None,
) -> FittedProbe:
    """Greedy answers on `items` (train split), a layer x feature sweep chosen on the
    probe's own validation split, refine thresholds from that same validation split; the
    probe is saved in `folder`.

    The items all sit in the task's train split for `seed`, so the probe splits them with
    another seed: its validation and test rows are train items the probe never fitted on."""
    from probes.data import collect  # the probes stack loads when a probe is fitted, not
    from probes.sweep import sweep  # when a policy is read

    probe_seed = seed + 1
    data = collect(engine, task, items, max_new_tokens=max_new_tokens, progress_cb=on_progress)
    try:
        result = sweep(data, seed=probe_seed, n_boot=200)
    except ValueError as error:  # e.g. every answer right (or wrong): nothing to learn
        return FittedProbe(
            None, None, None, None, None, None, f"none ({error})", Thresholds(), str(error)
        )
    result.probe.save(folder)
    thresholds = choose_thresholds(
        list(map(float, result.validation_risks)),
        [not bool(w) for w in result.validation_wrong],
        target_precision,
    )
    # the monitor's drift baseline: the probe's held-out rows, which the sweep never read
    # (the validation AUROC is the best of many candidates on a small split, so it
    # overstates the probe on new data)
    held_out_auroc, held_out_ece = result.held_out_auroc, result.held_out_ece
    auroc = result.validation.auroc
    description = f"{result.chosen.spec.name}, validation AUROC {auroc:.3f}" + (
        f", held-out AUROC {held_out_auroc:.3f} (n={result.n_held_out})"
        if held_out_auroc is not None
        else ""
    )
    return FittedProbe(
        name,
        result.chosen.spec.name,
        auroc,
        result.validation.ece,
        held_out_auroc,
        held_out_ece,
        description,
        thresholds,
    )


@lru_cache(maxsize=8)
def _load(path: str) -> Probe:
    from probes.artifact import load_probe

    return load_probe(path)


def attach_probe(engine: Engine, path: Path | None) -> None:
    """Score every generation of `engine` with the probe saved at `path` (None: no probe).
    The probe may have been fitted on an earlier version: that is how the monitor measures
    its drift on the new model."""
    from probes.runtime import RiskScorer

    engine.risk_fn = RiskScorer(_load(str(path))) if path else None
