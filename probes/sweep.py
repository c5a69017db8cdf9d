"""The layer x feature sweep: every candidate fitted on train, the best on validation
chosen, fitted and calibrated, then measured once on the held-out test rows.

    data = collect(engine, task)                      # probes.data
    result = sweep(data)                              # validation-only choice of feature
    result.probe.save(run / "probe"); plot_sweep(result, run / "sweep.png")

The choice never reads test labels; `held_out_auroc` / `held_out_ece` are measured after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engines.base import FEATURE_KINDS
from probes.artifact import Probe, ProbeCard, SplitInfo
from probes.calibration import CalibrationMethod, fit_calibrator
from probes.data import ProbeData
from probes.features import FeatureSpec
from probes.fit import (
    EstimatorConfig,
    LabelledRows,
    SweepRow,
    choose,
    export_weights,
    fit_estimator,
    validation_table,
)
from probes.labels import LabelSummary, label_array, summarize_labels, usable
from probes.metrics import RiskMetrics, auroc_and_ece, risk_metrics
from probes.runtime import probe_logits
from probes.split import DEFAULT_FRACTIONS, grouped_split


class SweepRefusedError(ValueError):
    """The labels cannot support a sweep (a split with one class only); the message says
    the fix. Any other error out of `sweep` is a bug."""


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
    validation_risks: NDArray[np.float64]  # (V,) the probe's calibrated risk, validation rows
    validation_wrong: NDArray[np.int64]  # (V,) their labels, 1 = wrong
    # On the test rows (truncated answers excluded), read only after the choice: the honest
    # numbers at fit time. None when those rows hold one class only.
    held_out_auroc: float | None
    held_out_ece: float | None
    n_held_out: int
    held_out_wrong: int | None = None  # of the n_held_out rows (the rest were right)

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
    validation; then score the chosen probe on validation and on the test rows. Test
    labels never reach the choice, the fit or the calibration."""
    y = label_array(data.labels)  # (N,)
    split = grouped_split(data.groups, seed=seed, fractions=fractions)
    split = split.restrict(usable(data.labels, include_truncated=include_truncated))
    train = LabelledRows(split.train, y[split.train])
    validation = LabelledRows(split.validation, y[split.validation])
    for name, part in (("train", train), ("validation", validation)):
        if len(np.unique(part.y)) < 2:
            raise SweepRefusedError(
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
    val_risks = calibrator(val_logits)  # (V,)
    metrics = risk_metrics(validation.y, val_logits, prob=val_risks, n_boot=n_boot, seed=seed)
    test_risks = calibrator(probe_logits(weights, matrix[split.test]))  # (T,)
    held_out_auroc, held_out_ece = auroc_and_ece(y[split.test], test_risks)
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
    return SweepResult(
        rows,
        chosen,
        Probe(card, weights),
        split.sizes(),
        labels,
        metrics,
        validation_risks=val_risks,
        validation_wrong=validation.y,
        held_out_auroc=held_out_auroc,
        held_out_ece=held_out_ece,
        n_held_out=len(split.test),
        held_out_wrong=int(np.sum(y[split.test])),
    )
