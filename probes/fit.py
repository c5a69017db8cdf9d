"""Fitting probes (scikit-learn) and choosing a feature on validation only.

`validation_table` receives the train and validation labels and nothing else: the test
split's labels cannot reach the choice of layer, feature kind or estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from probes.artifact import Weights
from probes.features import FeatureSet, FeatureSpec
from probes.metrics import auroc

EstimatorName = Literal["logreg", "mlp"]
ESTIMATORS: tuple[EstimatorName, ...] = ("logreg", "mlp")


@dataclass(frozen=True)
class EstimatorConfig:
    """One estimator and its hyperparameters."""

    name: EstimatorName = "logreg"
    # logreg: inverse L2 strength on standardized features. 0.01 had the best mean validation
    # AUROC over 8 split seeds on capitals with the default model (0.001: 0.83, 0.01: 0.86,
    # 0.05: 0.84, 1.0: 0.82); with H = 576 features and ~150 training items, weak
    # regularization overfits (train AUROC 1.0).
    C: float = 0.01
    hidden: tuple[int, ...] = (64,)  # mlp: hidden layer widths
    alpha: float = 1.0  # mlp: L2 strength
    max_iter: int = 500  # mlp epochs (lbfgs for logreg gets 5000 iterations)
    seed: int = 0

    @property
    def label(self) -> str:
        """
        >>> EstimatorConfig().label, EstimatorConfig("mlp").label
        ('logreg(C=0.01)', 'mlp(64, alpha=1)')
        """
        if self.name == "logreg":
            return f"logreg(C={self.C:g})"
        return f"mlp({','.join(map(str, self.hidden))}, alpha={self.alpha:g})"

    def hyperparameters(self) -> dict[str, object]:
        if self.name == "logreg":
            return {"C": self.C}
        return {
            "hidden": list(self.hidden),
            "alpha": self.alpha,
            "max_iter": self.max_iter,
            "seed": self.seed,
        }


def make_estimator(config: EstimatorConfig) -> Pipeline:
    """Standardize, then the classifier; `predict_proba[:, 1]` = P(wrong)."""
    if config.name == "logreg":
        classifier: LogisticRegression | MLPClassifier = LogisticRegression(
            C=config.C, max_iter=5000
        )
    elif config.name == "mlp":
        classifier = MLPClassifier(
            hidden_layer_sizes=config.hidden,
            alpha=config.alpha,
            max_iter=config.max_iter,
            random_state=config.seed,
        )
    else:
        raise ValueError(f"unknown estimator {config.name!r}; expected one of {ESTIMATORS}")
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def fit_estimator(
    features: NDArray[np.floating], y: NDArray[np.int64], config: EstimatorConfig
) -> Pipeline:
    """Fit on (N, D) features and (N,) labels (1 = wrong)."""
    if len(np.unique(y)) < 2:
        raise ValueError("cannot fit a probe on labels of one class only")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_estimator(config).fit(features, y)


def export_weights(pipeline: Pipeline) -> Weights:
    """The numpy weights `probes.runtime.probe_logits` reads (layout in `probes.artifact`)."""
    scaler: StandardScaler = pipeline.named_steps["scale"]
    classifier = pipeline.named_steps["classify"]
    weights: Weights = {
        "scaler.mean": np.asarray(scaler.mean_, dtype=np.float64),
        "scaler.scale": np.asarray(scaler.scale_, dtype=np.float64),
    }
    if isinstance(classifier, LogisticRegression):
        weights["linear.weight"] = classifier.coef_[0].astype(np.float64)  # (D,)
        weights["linear.bias"] = classifier.intercept_.astype(np.float64)  # (1,)
    else:
        if classifier.activation != "relu" or classifier.out_activation_ != "logistic":
            raise ValueError("only ReLU MLPs with one logistic output can be exported")
        for i, (w, b) in enumerate(zip(classifier.coefs_, classifier.intercepts_, strict=True)):
            weights[f"mlp.{i}.weight"] = w.astype(np.float64)  # (in, out)
            weights[f"mlp.{i}.bias"] = b.astype(np.float64)  # (out,)
    return weights


@dataclass(frozen=True)
class SweepRow:
    """One candidate: a feature and an estimator, fitted on train, scored on validation."""

    spec: FeatureSpec
    estimator: EstimatorConfig
    train_auroc: float
    val_auroc: float

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.spec.name,
            "kind": self.spec.kind,
            "layers": list(self.spec.layers),
            "estimator": self.estimator.label,
            "train_auroc": self.train_auroc,
            "val_auroc": self.val_auroc,
        }


@dataclass(frozen=True)
class LabelledRows:
    """Row indices of one split and their labels (1 = wrong)."""

    rows: NDArray[np.int64]
    y: NDArray[np.int64] = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.y):
            raise ValueError(f"{len(self.rows)} rows but {len(self.y)} labels")


def validation_table(
    features: FeatureSet,
    specs: Sequence[FeatureSpec],
    estimators: Sequence[EstimatorConfig],
    train: LabelledRows,
    validation: LabelledRows,
) -> list[SweepRow]:
    """Fit every (feature, estimator) on train and score AUROC on validation."""
    rows = []
    for spec in specs:
        matrix = features.matrix(spec)  # (N, D)
        for config in estimators:
            pipeline = fit_estimator(matrix[train.rows], train.y, config)
            train_score = pipeline.predict_proba(matrix[train.rows])[:, 1]
            val_score = pipeline.predict_proba(matrix[validation.rows])[:, 1]
            rows.append(
                SweepRow(spec, config, auroc(train.y, train_score), auroc(validation.y, val_score))
            )
    return rows


def choose(rows: Sequence[SweepRow]) -> SweepRow:
    """The best validation AUROC; ties go to the earliest row (deterministic).

    >>> a = SweepRow(FeatureSpec("query_token", (1,)), EstimatorConfig(), 0.9, 0.7)
    >>> b = SweepRow(FeatureSpec("query_token", (2,)), EstimatorConfig(), 0.8, 0.7)
    >>> choose([a, b]).spec.layers
    (1,)
    """
    scored = [row for row in rows if not np.isnan(row.val_auroc)]
    if not scored:
        raise ValueError("no candidate has a validation AUROC (does validation hold both classes?)")
    best = max(row.val_auroc for row in scored)
    return next(row for row in scored if row.val_auroc == best)
