"""Probe: the session's hallucination-risk probe, saved in the session's folder and given
to the engine's `generate` so that every generation carries its pre-generation risk.

Two fits: at the start, on the initial model's greedy answers to train-split items
(`fit_session_probe`); then every cycle, on the current version's own samples
(`refit_from_samples`): each acquired prompt labelled by the share of its K samples that
were wrong, its features the prefill states its generation captured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from agents.acquire import Attempt
from agents.config import StageConfig
from agents.evaluate import ItemResult
from agents.selection import label_with_verifier
from engines.base import Engine, ProgressFn
from probes.calibration import Thresholds, choose_thresholds
from tasks.base import Item, Task

if TYPE_CHECKING:
    from probes.artifact import Probe
    from probes.data import ProbeData
    from probes.features import FeatureSet
    from probes.passrate import PassRateRows
    from probes.runtime import RiskScorer


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
    refit_every_cycle: bool = Field(
        default=True,
        description="Refit the probe every cycle on the current version's own samples (each "
        "prompt labelled by the share of its K samples that were wrong), so it is never stale "
        "and a session gets one as soon as some samples are right and some wrong.",
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
    held_out_counts: tuple[int, int] | None = None  # (wrong, right) rows of held_out_auroc


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
    # when a policy is read

    data = collect(engine, task, items, max_new_tokens=max_new_tokens, progress_cb=on_progress)
    return fit_on_data(data, name=name, folder=folder, target_precision=target_precision, seed=seed)


def fit_on_answers(
    engine: Engine,
    task: Task,
    answers: Sequence[ItemResult],
    *,
    name: str,
    folder: Path,
    max_new_tokens: int,
    target_precision: float,
    seed: int,
) -> FittedProbe:
    """A probe for `engine` from greedy answers it already gave (a version's dev answers,
    with their verdicts): their prompts' prefill states (one forward pass per batch, no
    generation) as features, the answers' verdicts as labels; then the same sweep and
    thresholds as `fit_session_probe`."""
    from probes.data import ProbeData
    from probes.features import FeatureSet, prompt_template_hash
    from probes.labels import verify_answer

    by_id = {item.id: item for item in task.items}
    items = [by_id[a.id] for a in answers]
    prompts = [item.prompt for item in items]
    states = engine.hidden_states(prompts)
    ids = [item.id for item in items]
    data = ProbeData(
        task=task.name,
        max_new_tokens=max_new_tokens,
        item_ids=ids,
        groups=[item.group for item in items],
        prompts=prompts,
        features=FeatureSet.from_states(
            states,
            ids,
            fingerprint=engine.fingerprint,
            template_hash=prompt_template_hash(engine),
            model_name=engine.name,
        ),
        labels=[
            verify_answer(task, i, a.output, a.finish_reason)
            for i, a in zip(items, answers, strict=True)
        ],
        mean_logprob=np.array([a.mean_logprob or 0.0 for a in answers], dtype=np.float64),
        mean_entropy=np.array([a.mean_entropy or 0.0 for a in answers], dtype=np.float64),
    )
    return fit_on_data(data, name=name, folder=folder, target_precision=target_precision, seed=seed)


def fit_on_data(
    data: ProbeData, *, name: str, folder: Path, target_precision: float, seed: int
) -> FittedProbe:
    """The layer x feature sweep on `data`, chosen on the probe's own validation split
    (split with `seed + 1`), refine thresholds from that same validation split; the probe
    is saved in `folder`."""
    from probes.sweep import sweep
    from probes.sweep_table import save_sweep_table

    probe_seed = seed + 1
    try:
        result = sweep(data, seed=probe_seed, n_boot=200)
    except ValueError as error:  # e.g. every answer right (or wrong): nothing to learn
        return FittedProbe(
            None, None, None, None, None, None, f"none ({error})", Thresholds(), str(error)
        )
    result.probe.save(folder)
    save_sweep_table(folder, "AUROC", result.table())
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
        held_out_counts=None
        if result.held_out_wrong is None
        else (result.held_out_wrong, result.n_held_out - result.held_out_wrong),
    )


@lru_cache(maxsize=8)
def _load(path: str) -> Probe:
    from probes.artifact import load_probe

    return load_probe(path)


def risk_scorer(path: Path) -> RiskScorer:
    """The probe saved at `path` (read once per path) as a function of a prompt's prefill
    states. Given to `generate`, it scores every generation; it may have been fitted on an
    earlier version: that is how the monitor measures its drift on the new model."""
    from probes.runtime import RiskScorer

    return RiskScorer(_load(str(path)))


def loop_features(engine: Engine, attempts: Sequence[Attempt]) -> FeatureSet | None:
    """The prefill features the attempts' generations captured (None when an engine did
    not capture them, or there are none)."""
    states = [a.states for a in attempts]
    if not states or any(s is None for s in states):
        return None
    from probes.features import FeatureSet, prompt_template_hash

    return FeatureSet.from_states(
        [s for s in states if s is not None],
        [a.item.id for a in attempts],
        fingerprint=engine.fingerprint,
        template_hash=prompt_template_hash(engine),
        model_name=engine.name,
    )


def pass_rate_rows(
    task: Task,
    parts: Sequence[tuple[Sequence[Attempt], FeatureSet]],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
) -> PassRateRows | None:
    """One version's acquired prompts (from every cycle that sampled it) as soft-labelled
    rows: the share of each prompt's samples the verifier found wrong (None: no rows)."""
    if not parts:
        return None
    import numpy as np

    from probes.features import FeatureSet
    from probes.passrate import PassRateRows

    labelled = [lab for attempts, _ in parts for lab in label_with_verifier(task, attempts)]
    return PassRateRows(
        FeatureSet.concat([features for _, features in parts]),
        np.array([1.0 - lab.pass_rate for lab in labelled]),
        [lab.attempt.item.group for lab in labelled],
        task=task.name,
        samples_per_prompt=samples_per_prompt,
        max_new_tokens=max_new_tokens,
    )


def refit_from_samples(
    rows: PassRateRows | None, *, name: str, folder: Path, seed: int, target_precision: float
) -> FittedProbe:
    """A pass-rate probe on `rows`, saved in `folder`; when the rows cannot support one yet
    (no rows, or all samples right or all wrong), no probe and the reason with the counts.
    Its `val_auroc` / `held_out_auroc` are concordances with the soft labels (AUROC when
    the labels are 0/1); refine's thresholds are chosen for `target_precision` on its
    validation rows, each counted right by its pass rate."""
    if rows is None:
        return _no_probe("no samples with prefill features from this version yet")
    from probes.passrate import fit_pass_rate_probe
    from probes.sweep_table import save_sweep_table

    try:
        fit = fit_pass_rate_probe(rows, seed=seed + 1)
    except ValueError as error:
        return _no_probe(str(error))
    fit.probe.save(folder)
    save_sweep_table(folder, "concordance with pass rates", fit.table())
    concordance = fit.chosen.validation_concordance
    return FittedProbe(
        name,
        fit.chosen.spec.name,
        None if concordance != concordance else concordance,  # NaN: one label on validation
        None,
        fit.held_out_concordance,
        None,
        fit.description,
        choose_thresholds(
            [float(r) for r in fit.validation_risk],
            [float(p) for p in fit.validation_pass_rate],
            target_precision,
        ),
    )


def _no_probe(reason: str) -> FittedProbe:
    return FittedProbe(None, None, None, None, None, None, f"none ({reason})", Thresholds(), reason)
