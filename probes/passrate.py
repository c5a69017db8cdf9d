"""Pass-rate probes: soft labels from the loop's own samples.

Each acquired prompt was sampled K times; its label is the share of its samples that are
wrong (0..1), its features the prefill states its own generation captured (no extra
forward pass). A logistic regression is fitted on these soft targets (each row twice:
label 1 weighted by the share, label 0 by one minus it), the layer and feature kind are
chosen by log loss on the validation rows, and the held-out rows are scored once, after
the choice. Soft labels need only *some* right and *some* wrong samples, not prompts of
both greedy classes, so a probe can be fitted long before greedy labels are balanced.

    rows = PassRateRows(features, wrong_share, groups, task="arithmetic", samples_per_prompt=4)
    problem = rows.problem()            # None, or why no probe can be fitted yet
    fitted = fit_pass_rate_probe(rows, seed=1)
    fitted.probe.save(folder)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from probes.artifact import Probe, ProbeCard, SplitInfo
from probes.calibration import Calibrator
from probes.features import FeatureSet, FeatureSpec
from probes.fit import EstimatorConfig, export_weights, make_estimator
from probes.runtime import probe_logits
from probes.split import DEFAULT_FRACTIONS, SplitIndices, grouped_split

FloatArray = NDArray[np.float64]
MIN_TRAIN_ROWS = 4
MIN_VALIDATION_ROWS = 2
SPLIT_TRIES = 10  # split seeds tried before giving up on rows too few to split well


@dataclass(frozen=True)
class PassRateRows:
    """Prompts with their prefill features and the share of their K samples that were wrong."""

    features: FeatureSet
    wrong_share: FloatArray  # (N,) in [0, 1]
    groups: list[str]
    task: str
    samples_per_prompt: int
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if not len(self.features) == len(self.wrong_share) == len(self.groups):
            raise ValueError(
                f"{len(self.features)} feature rows, {len(self.wrong_share)} labels and "
                f"{len(self.groups)} groups: they must align"
            )

    def __len__(self) -> int:
        return len(self.groups)

    def sample_counts(self) -> tuple[int, int]:
        """(right, wrong) samples behind the labels.

        >>> rows = PassRateRows(_empty_features(2), np.array([0.25, 1.0]), ["a", "b"], task="t",
        ...                     samples_per_prompt=4)
        >>> rows.sample_counts()
        (3, 5)
        """
        wrong = round(float(np.sum(self.wrong_share)) * self.samples_per_prompt)
        return len(self) * self.samples_per_prompt - wrong, wrong

    def split(self, seed: int) -> SplitIndices:
        return grouped_split(self.groups, seed=seed, fractions=DEFAULT_FRACTIONS)

    def usable_split_seed(self, seed: int) -> int | None:
        """The first of `SPLIT_TRIES` split seeds from `seed` on whose split supports a fit
        (with few right samples, one seed may put them all outside the train rows)."""
        return next((s for s in range(seed, seed + SPLIT_TRIES) if self.problem(s) is None), None)

    def problem(self, seed: int) -> str | None:
        """Why no probe can be fitted on these rows with this split seed (None: it can),
        with the counts.

        >>> rows = PassRateRows(_empty_features(3), np.ones(3), ["a", "b", "c"], task="t",
        ...                     samples_per_prompt=2)
        >>> rows.problem(0)
        '3 prompts, 0 right and 6 wrong samples: waiting for both right and wrong samples'
        """
        right, wrong = self.sample_counts()
        counts = f"{len(self)} prompts, {right} right and {wrong} wrong samples"
        if right == 0 or wrong == 0:
            return f"{counts}: waiting for both right and wrong samples"
        split = self.split(seed)
        train_shares = self.wrong_share[split.train]
        if len(split.train) < MIN_TRAIN_ROWS or np.ptp(train_shares) == 0:
            return f"{counts}: the probe's train rows ({len(split.train)}) hold one label only"
        if len(split.validation) < MIN_VALIDATION_ROWS:
            return f"{counts}: {len(split.validation)} validation rows, need {MIN_VALIDATION_ROWS}"
        return None


@dataclass(frozen=True)
class CandidateScore:
    spec: FeatureSpec
    validation_log_loss: float
    validation_concordance: float


@dataclass
class PassRateFit:
    """The chosen pass-rate probe and how it measured."""

    probe: Probe
    chosen: CandidateScore
    candidates: list[CandidateScore]
    split_sizes: dict[str, int]
    held_out_concordance: float | None  # on the probe's test rows, read after the choice
    held_out_log_loss: float | None
    right_samples: int
    wrong_samples: int
    # the calibrated risk and the pass rate of each validation row: what refine's
    # thresholds for this probe are chosen on
    validation_risk: FloatArray
    validation_pass_rate: FloatArray

    def table(self) -> list[dict[str, object]]:
        """Every candidate: its feature and validation concordance (AUROC for 0/1 labels)."""
        return [
            {
                "feature": c.spec.name,
                "kind": c.spec.kind,
                "layers": list(c.spec.layers),
                "val_auroc": None
                if np.isnan(c.validation_concordance)
                else c.validation_concordance,
                "val_log_loss": c.validation_log_loss,
                "chosen": c == self.chosen,
            }
            for c in self.candidates
        ]

    @property
    def description(self) -> str:
        held = (
            f", held-out concordance {self.held_out_concordance:.3f} (n={self.split_sizes['test']})"
            if self.held_out_concordance is not None
            else ""
        )
        return (
            f"{self.chosen.spec.name} on {sum(self.split_sizes.values())} prompts' pass rates "
            f"({self.right_samples} right / {self.wrong_samples} wrong samples), validation "
            f"log loss {self.chosen.validation_log_loss:.3f}{held}"
        )


def concordance(wrong_share: ArrayLike, risk: ArrayLike) -> float:
    """The share of pairs with different labels that `risk` orders the same way (ties in
    risk count half): AUROC for 0/1 labels, Harrell's C for soft ones; NaN with no such pair.

    >>> concordance([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    1.0
    >>> concordance([0.0, 0.5, 1.0], [0.3, 0.2, 0.9])
    0.6666666666666666
    >>> bool(np.isnan(concordance([1.0, 1.0], [0.1, 0.2])))
    True
    """
    y = np.asarray(wrong_share, dtype=np.float64)  # (N,)
    r = np.asarray(risk, dtype=np.float64)  # (N,)
    higher = y[:, None] > y[None, :]  # (N, N) pairs (i, j) where i is more often wrong
    pairs = int(higher.sum())
    if pairs == 0:
        return float("nan")
    agree = (r[:, None] > r[None, :]) & higher
    ties = (r[:, None] == r[None, :]) & higher
    return float((agree.sum() + 0.5 * ties.sum()) / pairs)


def soft_log_loss(wrong_share: ArrayLike, risk: ArrayLike) -> float:
    """Mean cross-entropy of predicted risks against soft labels (nats).

    >>> round(soft_log_loss([0.5], [0.5]), 4)
    0.6931
    """
    y = np.asarray(wrong_share, dtype=np.float64)
    p = np.clip(np.asarray(risk, dtype=np.float64), 1e-6, 1 - 1e-6)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def soft_targets(wrong_share: FloatArray) -> tuple[NDArray[np.int64], FloatArray]:
    """Each row twice: (labels, weights) = ([1]*N + [0]*N, [share] + [1 - share]).

    >>> y, w = soft_targets(np.array([0.25, 1.0]))
    >>> y.tolist(), w.tolist()
    ([1, 1, 0, 0], [0.25, 1.0, 0.75, 0.0])
    """
    n = len(wrong_share)
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    return labels, np.concatenate([wrong_share, 1.0 - wrong_share])


def fit_soft(
    matrix: NDArray[np.floating], wrong_share: FloatArray, config: EstimatorConfig
) -> Pipeline:
    """Standardize and fit a logistic regression to soft targets (N, D) -> (N,)."""
    labels, weights = soft_targets(wrong_share)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_estimator(config).fit(
            np.concatenate([matrix, matrix]), labels, classify__sample_weight=weights
        )


def soft_platt(logits: FloatArray, wrong_share: FloatArray) -> Calibrator:
    """Platt scaling fitted to soft labels; none when it would not keep the probe's order
    (too few distinct labels, or a slope that is not positive)."""
    if len(np.unique(wrong_share)) < 2:
        return Calibrator("none")
    labels, weights = soft_targets(wrong_share)
    model = LogisticRegression(C=100.0, max_iter=1000).fit(
        np.concatenate([logits, logits])[:, None], labels, sample_weight=weights
    )
    slope = float(model.coef_[0, 0])
    if slope <= 0:
        return Calibrator("none")
    return Calibrator("platt", a=slope, b=float(model.intercept_[0]))


def fit_pass_rate_probe(
    rows: PassRateRows,
    *,
    seed: int,
    config: EstimatorConfig = EstimatorConfig(),
    kinds: Sequence[str] | None = None,
) -> PassRateFit:
    """Every layer x feature kind fitted on the train rows, the lowest validation log loss
    chosen and Platt-calibrated on validation, then scored once on the test rows. Raises
    ValueError (with `rows.problem`) when no split of the rows supports a fit."""
    split_seed = rows.usable_split_seed(seed)
    if split_seed is None:
        raise ValueError(rows.problem(seed))
    seed, split = split_seed, rows.split(split_seed)
    share = rows.wrong_share
    candidates = [
        _score_candidate(rows.features, share, split, spec, config)
        for spec in _specs(rows.features, kinds)
    ]
    chosen = min(candidates, key=lambda c: c.validation_log_loss)
    matrix = rows.features.matrix(chosen.spec)  # (N, D)
    weights = export_weights(fit_soft(matrix[split.train], share[split.train], config))
    calibrator = soft_platt(
        probe_logits(weights, matrix[split.validation]), share[split.validation]
    )
    validation_risk = calibrator(probe_logits(weights, matrix[split.validation]))  # (V,)
    test_risk = calibrator(probe_logits(weights, matrix[split.test]))  # (T,)
    held_out = _held_out(share[split.test], test_risk)
    right, wrong = rows.sample_counts()
    card = _card(rows, chosen, config, split, seed, calibrator, right, wrong, matrix.shape[1])
    return PassRateFit(
        Probe(card, weights),
        chosen,
        candidates,
        split.sizes(),
        *held_out,
        right,
        wrong,
        validation_risk,
        1.0 - share[split.validation],
    )


def _specs(features: FeatureSet, kinds: Sequence[str] | None) -> list[FeatureSpec]:
    """Every kind x layer whose features differ between prompts. One that is the same for
    every prompt (layer 0's query token: the chat template's last token embedding) can
    only predict the base rate, so on weak signal it wins on log loss and ranks every
    prompt alike."""
    specs = [
        FeatureSpec(kind, (layer,))
        for kind in kinds or features.kinds
        for layer in range(features.num_layers)
    ]
    varying = [spec for spec in specs if _varies(features.matrix(spec))]
    return varying or specs


def _varies(matrix: NDArray[np.floating]) -> bool:
    """True when some feature column differs between rows. (N, D) -> bool"""
    return bool(np.any(np.ptp(matrix, axis=0) > 1e-6))


def _score_candidate(
    features: FeatureSet,
    share: FloatArray,
    split: SplitIndices,
    spec: FeatureSpec,
    config: EstimatorConfig,
) -> CandidateScore:
    matrix = features.matrix(spec)  # (N, D)
    model = fit_soft(matrix[split.train], share[split.train], config)
    risk = model.predict_proba(matrix[split.validation])[:, 1]  # (V,)
    val = share[split.validation]
    return CandidateScore(spec, soft_log_loss(val, risk), concordance(val, risk))


def _held_out(share: FloatArray, risk: FloatArray) -> tuple[float | None, float | None]:
    if len(share) == 0:
        return None, None
    c = concordance(share, risk)
    return (None if np.isnan(c) else c), soft_log_loss(share, risk)


def _card(
    rows: PassRateRows,
    chosen: CandidateScore,
    config: EstimatorConfig,
    split: SplitIndices,
    seed: int,
    calibrator: Calibrator,
    right: int,
    wrong: int,
    input_dim: int,
) -> ProbeCard:
    features = rows.features
    return ProbeCard(
        model_name=features.model_name,
        fingerprint=features.fingerprint,
        template_hash=features.template_hash,
        feature=chosen.spec.name,
        layers=list(chosen.spec.layers),
        feature_kind=chosen.spec.kind,
        input_dim=input_dim,
        estimator="logreg",
        hyperparameters=config.hyperparameters()
        | {"targets": "pass rate", "samples_per_prompt": rows.samples_per_prompt},
        task=rows.task,
        max_new_tokens=rows.max_new_tokens,
        split=SplitInfo(seed=seed, fractions=DEFAULT_FRACTIONS, sizes=split.sizes()),
        labels={"prompts": len(rows), "right_samples": right, "wrong_samples": wrong},
        metrics={
            "validation": {
                "log_loss": chosen.validation_log_loss,
                "concordance": chosen.validation_concordance,
            }
        },
        calibration=calibrator.to_json(),
    )


def _empty_features(n: int) -> FeatureSet:
    """A feature set of `n` rows of zeros (doctests)."""
    return FeatureSet(
        [str(i) for i in range(n)],
        {"query_token": np.zeros((n, 1, 1), dtype=np.float32)},
        "fp",
        "tmpl",
    )
