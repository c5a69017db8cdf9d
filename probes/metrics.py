"""Metrics of a risk score against binary labels: pure numpy functions.

Conventions everywhere in `probes/`: `y` is 1 when the answer was wrong (hallucinated) and
0 when it was right; `risk` is any score where higher means "more likely wrong". Selective
prediction answers the lowest-risk items first: coverage is the fraction answered, and its
risk is the error rate among the answered items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

FloatArray = NDArray[np.float64]


def _as_arrays(y: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.int64], FloatArray]:
    labels = np.asarray(y).astype(np.int64).ravel()  # (N,)
    scores = np.asarray(score, dtype=np.float64).ravel()  # (N,)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (right) or 1 (wrong)")
    return labels, scores


def auroc(y: ArrayLike, risk: ArrayLike) -> float:
    """Area under the ROC curve: P(risk of a wrong item > risk of a right one), ties count 1/2.

    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auroc([0, 1], [0.5, 0.5])
    0.5
    >>> auroc([1, 1], [0.2, 0.3])
    nan
    """
    labels, scores = _as_arrays(y, risk)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # (N,) average ranks, 1-based
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(y: ArrayLike, risk: ArrayLike) -> float:
    """Average precision of finding the wrong answers by risk (sklearn's definition:
    sum over thresholds of (recall step) x precision; tied scores form one threshold).

    >>> auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    >>> auprc([0, 1, 1], [0.5, 0.5, 0.5])
    0.6666666666666666
    """
    labels, scores = _as_arrays(y, risk)
    if labels.sum() == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    ends = np.r_[
        np.flatnonzero(np.diff(sorted_scores)), labels.size - 1
    ]  # last index per threshold
    true_pos = np.cumsum(sorted_labels)[ends]
    precision = true_pos / (ends + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(y: ArrayLike, prob: ArrayLike, n_bins: int = 10) -> float:
    """ECE: |observed error rate - mean predicted probability| per equal-width bin,
    weighted by the bin's share of items.

    >>> expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9])  # (2 x 0.3 + 2 x 0.1) / 4
    0.2
    >>> expected_calibration_error([0, 1], [0.5, 0.5])
    0.0
    """
    labels, probs = _as_arrays(y, prob)
    if labels.size == 0:
        return math.nan
    bins = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)  # (N,)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.sum() * abs(labels[inside].mean() - probs[inside].mean())
    return round(float(total / labels.size), 12)


def auroc_and_ece(y: ArrayLike, risk: ArrayLike) -> tuple[float | None, float | None]:
    """AUROC and ECE of risks against labels (1 = wrong); (None, None) when the labels hold
    one class only. The session compares the probe's numbers at fit and on fresh labels
    with this one function.

    >>> auroc_and_ece([1, 1, 1], [0.2, 0.5, 0.9])
    (None, None)
    >>> auroc_and_ece([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    (1.0, 0.15)
    """
    labels, risks = _as_arrays(y, risk)
    if len(np.unique(labels)) < 2:
        return None, None
    return auroc(labels, risks), expected_calibration_error(labels, risks)


def cumulative_errors(y: ArrayLike, risk: ArrayLike) -> FloatArray:
    """Errors among the k lowest-risk items, k = 1..N; within tied risks, the expected count
    over the tie's random orders (errors spread evenly across the tie).

    >>> cumulative_errors([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3]).tolist()
    [0.0, 0.0, 1.0, 2.0]
    >>> cumulative_errors([1, 0, 0], [0.5, 0.5, 0.9]).tolist()
    [0.5, 1.0, 1.0]
    """
    labels, scores = _as_arrays(y, risk)
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order].astype(np.float64)
    out = np.empty(labels.size)  # (N,)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], labels.size]
    before = 0.0
    for start, end in zip(starts, ends, strict=True):
        block_errors = sorted_labels[start:end].sum()
        out[start:end] = before + block_errors * np.arange(1, end - start + 1) / (end - start)
        before += block_errors
    return out


def aurc(y: ArrayLike, risk: ArrayLike) -> float:
    """Area under the risk-coverage curve: mean over k = 1..N of the error rate among the
    k lowest-risk items (lower is better).

    >>> aurc([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3])  # (0 + 0 + 1/3 + 1/2) / 4
    0.20833333333333331
    >>> aurc([1, 0], [0.5, 0.5])
    0.5
    """
    errors = cumulative_errors(y, risk)
    if errors.size == 0:
        return math.nan
    return float(np.mean(errors / np.arange(1, errors.size + 1)))


def accuracy_at_coverage(y: ArrayLike, risk: ArrayLike, coverage: float) -> float:
    """Accuracy on the ceil(coverage x N) lowest-risk items (the rest abstained on).

    >>> accuracy_at_coverage([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3], 0.5)
    1.0
    >>> accuracy_at_coverage([0, 1, 0, 1], [0.1, 0.4, 0.2, 0.3], 0.8)  # ceil(3.2) = 4 items
    0.5
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    errors = cumulative_errors(y, risk)
    if errors.size == 0:
        return math.nan
    k = max(1, math.ceil(coverage * errors.size - 1e-9))
    return float(1.0 - errors[k - 1] / k)


def bootstrap_ci(
    y: ArrayLike,
    risk: ArrayLike,
    metric: Callable[[ArrayLike, ArrayLike], float] = auroc,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric`, resampling items with replacement
    (resamples where the metric is undefined, e.g. one class only, are dropped).

    >>> bootstrap_ci([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    (1.0, 1.0)
    """
    labels, scores = _as_arrays(y, risk)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, labels.size, size=(n_boot, labels.size))  # (B, N)
    values = np.array([metric(labels[d], scores[d]) for d in draws])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return (float(low), float(high))


Statistic = Callable[[NDArray[np.int64]], Mapping[str, float | None]]


def paired_bootstrap(
    n_items: int,
    statistic: Statistic,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every number `statistic` returns for a resample of
    item indices (N,). Every number of one resample is computed on the same draw, so
    numbers of two methods scored on the same items, and their differences, are paired.
    A number undefined on a draw (None or NaN, e.g. a precision with nothing answered)
    is left out of that number's interval only. (scipy's `bootstrap` resamples one
    statistic per call, and a single undefined draw makes its whole interval NaN.)

    >>> values = np.array([0.0, 1.0, 1.0, 1.0])
    >>> ci = paired_bootstrap(4, lambda i: {"mean": values[i].mean(), "none": None})
    >>> ci["mean"][0] <= 0.75 <= ci["mean"][1], "none" in ci
    (True, False)
    """
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for key, value in statistic(rng.integers(0, n_items, size=n_items)).items():
            if value is not None and not math.isnan(value):
                drawn.setdefault(key, []).append(float(value))
    tail = (1.0 - level) / 2 * 100
    intervals = {}
    for key, values in drawn.items():
        low, high = np.percentile(values, [tail, 100 - tail])
        intervals[key] = (float(low), float(high))
    return intervals


@dataclass(frozen=True)
class RiskMetrics:
    """Every metric of one risk score on one split."""

    n: int
    error_rate: float  # share of wrong answers (the base rate)
    auroc: float
    auroc_ci: tuple[float, float]  # bootstrap 95%
    auprc: float
    aurc: float
    accuracy_at_50: float  # answering the 50% lowest-risk items
    accuracy_at_80: float
    ece: float | None  # only for calibrated probabilities

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def risk_metrics(
    y: ArrayLike,
    risk: ArrayLike,
    *,
    prob: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> RiskMetrics:
    """All metrics of `risk`; ECE from `prob` (calibrated probabilities) when given."""
    labels, scores = _as_arrays(y, risk)
    return RiskMetrics(
        n=int(labels.size),
        error_rate=float(labels.mean()) if labels.size else math.nan,
        auroc=auroc(labels, scores),
        auroc_ci=bootstrap_ci(labels, scores, n_boot=n_boot, seed=seed),
        auprc=auprc(labels, scores),
        aurc=aurc(labels, scores),
        accuracy_at_50=accuracy_at_coverage(labels, scores, 0.5),
        accuracy_at_80=accuracy_at_coverage(labels, scores, 0.8),
        ece=None if prob is None else expected_calibration_error(labels, prob),
    )


def roc_curve_points(y: ArrayLike, risk: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0).

    >>> fpr, tpr = roc_curve_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    labels, scores = _as_arrays(y, risk)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), labels.size - 1]
    true_pos = np.cumsum(sorted_labels)[ends]
    false_pos = ends + 1 - true_pos
    tpr = np.r_[0.0, true_pos / max(true_pos[-1], 1)]
    fpr = np.r_[0.0, false_pos / max(false_pos[-1], 1)]
    return fpr, tpr


def auroc_standard_error(auroc_value: float, n_positive: int, n_negative: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUROC measured on `n_positive`
    wrong and `n_negative` right answers; infinite when either class is empty. The formula
    gives 0 at an AUROC of exactly 0 or 1, which a dozen rows reach by chance, so the AUROC
    is first kept one row's worth inside them: within [1/n, 1 - 1/n], n = all rows.

    >>> round(auroc_standard_error(0.8, 10, 10), 3)
    0.102
    >>> round(auroc_standard_error(1.0, 6, 6), 3)  # as if 0.917
    0.09
    >>> round(auroc_standard_error(0.8, 100, 100), 3)
    0.031
    """
    if n_positive < 1 or n_negative < 1:
        return math.inf
    edge = 1.0 / (n_positive + n_negative)
    a = min(max(auroc_value, edge), 1.0 - edge)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    variance = (
        a * (1.0 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)
    ) / (n_positive * n_negative)
    return math.sqrt(max(variance, 0.0))


def auroc_drop_is_clear(
    before: tuple[float, int, int], after: tuple[float, int, int], z: float = 1.645
) -> bool:
    """Whether an AUROC fell by more than the noise of both measurements: each is (AUROC,
    wrong answers, right answers); the fall must exceed `z` (one-sided 95% by default)
    standard errors of the difference (the two measurements taken as independent).

    >>> auroc_drop_is_clear((1.00, 6, 6), (0.89, 40, 40))  # 12 rows at fit: noise
    False
    >>> auroc_drop_is_clear((0.85, 200, 200), (0.60, 200, 200))
    True
    """
    (a, pos_a, neg_a), (b, pos_b, neg_b) = before, after
    spread = math.hypot(
        auroc_standard_error(a, pos_a, neg_a), auroc_standard_error(b, pos_b, neg_b)
    )
    return a - b > z * spread
