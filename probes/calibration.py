"""Calibration of a probe's raw logit into a probability of a wrong answer, and of the
risk thresholds that route prompts (refine's `Thresholds`).

Fit on the validation split (never on train, where the probe's logits are overconfident,
nor on test); applied at run time with numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

CalibrationMethod = Literal["platt", "isotonic", "none"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("platt", "isotonic", "none")


def sigmoid(z: ArrayLike) -> NDArray[np.float64]:
    """Numerically stable logistic function.

    >>> sigmoid([0.0, 1000.0, -1000.0]).tolist()
    [0.5, 1.0, 0.0]
    """
    values = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -values))


@dataclass(frozen=True)
class Calibrator:
    """`platt`: p = sigmoid(a z + b); `isotonic`: a monotone step map, linearly interpolated
    between its knots and clipped at the ends; `none`: p = sigmoid(z)."""

    method: CalibrationMethod = "none"
    a: float = 1.0
    b: float = 0.0
    knots_x: list[float] = field(default_factory=list)
    knots_y: list[float] = field(default_factory=list)

    def __call__(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Probabilities (N,) from raw logits (N,).

        >>> Calibrator("platt", a=2.0, b=-1.0)([0.5]).tolist()
        [0.5]
        >>> Calibrator("isotonic", knots_x=[0.0, 1.0], knots_y=[0.2, 0.6])([-5, 0.5, 9]).tolist()
        [0.2, 0.4, 0.6]
        """
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "platt":
            return sigmoid(self.a * z + self.b)
        if self.method == "isotonic":
            return np.interp(z, self.knots_x, self.knots_y)
        return sigmoid(z)

    def to_json(self) -> dict[str, object]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "isotonic":
            return {"method": "isotonic", "knots_x": self.knots_x, "knots_y": self.knots_y}
        return {"method": "none"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibrator:
        method = data.get("method", "none")
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration {method!r}; expected {CALIBRATION_METHODS}")
        return cls(
            method=method,
            a=float(data.get("a", 1.0)),
            b=float(data.get("b", 0.0)),
            knots_x=[float(v) for v in data.get("knots_x", [])],
            knots_y=[float(v) for v in data.get("knots_y", [])],
        )


def fit_calibrator(
    logits: ArrayLike, y: ArrayLike, method: CalibrationMethod = "platt"
) -> Calibrator:
    """Fit a calibrator of raw logits (N,) to labels (N,) (1 = wrong) on held-out items."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(y).astype(np.int64).ravel()
    if method == "none":
        return Calibrator("none")
    if method == "platt":
        return fit_platt(z, labels)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, labels)
        return Calibrator(
            "isotonic",
            knots_x=[float(v) for v in iso.X_thresholds_],
            knots_y=[float(v) for v in iso.y_thresholds_],
        )
    raise ValueError(
        f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}"
    )


def platt_targets(labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """Platt's (1999) smoothed targets: (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2)
    for negatives, so a validation split the probe separates perfectly gets a finite slope
    rather than risks of exactly 0 and 1 (which tie and leave a gate no cut-off to choose).

    >>> platt_targets(np.array([1, 0, 0])).round(3).tolist()
    [0.667, 0.25, 0.25]
    """
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def fit_platt(z: NDArray[np.float64], labels: NDArray[np.int64]) -> Calibrator:
    """p = sigmoid(a z + b) fitted to `platt_targets` (each row twice: weighted by its
    target as a positive and by 1 - target as a negative), nearly unregularized.

    >>> cal = fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    >>> 0.0 < cal.a < 10.0, cal([2.0]).item() < 0.9
    (True, True)
    """
    from sklearn.linear_model import LogisticRegression

    targets = platt_targets(labels)
    both = np.concatenate([z, z])[:, None]
    classes = np.concatenate([np.ones_like(labels), np.zeros_like(labels)])
    weights = np.concatenate([targets, 1.0 - targets])
    model = LogisticRegression(C=1e6, max_iter=1000).fit(both, classes, sample_weight=weights)
    return Calibrator("platt", a=float(model.coef_[0, 0]), b=float(model.intercept_[0]))


@dataclass(frozen=True)
class Thresholds:
    """Risk cut-offs of refine's routes (the defaults are used until a probe is fitted)."""

    low: float = 0.3  # risk at or below: answer greedily
    high: float = 0.7  # risk above: abstain or route to the fallback model

    @classmethod
    def chosen(cls, saved: Mapping[str, float] | None) -> Thresholds:
        """The thresholds a session saved (`{"low": .., "high": ..}`), the default for
        any it did not choose.

        >>> Thresholds.chosen({"low": 0.1}), Thresholds.chosen(None) == Thresholds()
        (Thresholds(low=0.1, high=0.7), True)
        """
        default = cls()
        saved = saved or {}
        return cls(saved.get("low", default.low), saved.get("high", default.high))


def threshold_for_precision(
    risks: Sequence[float], correct: Sequence[float], target: float
) -> float:
    """The highest risk cut-off whose answered set (risk <= cut-off) still reaches the
    target precision on dev; the lowest risk when none does. `correct` is 0/1 per item, or
    each item's pass rate (the share of its samples that were right).

    >>> threshold_for_precision([0.1, 0.2, 0.8, 0.9], [True, True, False, True], 0.9)
    0.2
    >>> threshold_for_precision([0.1, 0.2], [True, True], 0.9)
    0.2
    """
    ranked = sorted(zip(risks, correct, strict=True))
    best, right = ranked[0][0], 0.0
    for answered, (risk, ok) in enumerate(ranked, start=1):
        right += ok
        if right / answered >= target:
            best = risk
    return best


def choose_thresholds(
    risks: Sequence[float], correct: Sequence[float], target_precision: float
) -> Thresholds:
    """low = the cut-off reaching the target precision; high = the cut-off reaching half
    of the distance from the overall accuracy to the target (never below low); the
    defaults when there are no risks.

    >>> choose_thresholds([0.1, 0.2, 0.6, 0.9], [True, True, False, False], 0.9)
    Thresholds(low=0.2, high=0.2)
    >>> choose_thresholds([], [], 0.9)
    Thresholds(low=0.3, high=0.7)
    """
    if not risks:
        return Thresholds()
    low = threshold_for_precision(risks, correct, target_precision)
    base = sum(correct) / len(correct)
    high = threshold_for_precision(risks, correct, base + (target_precision - base) / 2)
    return Thresholds(low=low, high=max(high, low))


# -- the probe gate (answer when risk <= cut-off, else abstain), its cut-off chosen on dev --

ABSTAIN_ON_ALL = float("-inf")  # a cut-off below every risk: the gate answers nothing


def _cut_offs(risks: Sequence[float]) -> list[float]:
    """Every distinct gate: abstain on all, then answer up to each distinct risk."""
    return [ABSTAIN_ON_ALL, *sorted(set(risks))]


def threshold_for_accuracy_floor(
    risks: Sequence[float], correct: Sequence[bool], min_accuracy: float
) -> float:
    """The lowest cut-off (the fewest answers, so the fewest wrong ones) whose gated dev
    accuracy, correct answers with risk <= cut-off over all items, still reaches
    `min_accuracy`; the highest risk (answer everything) when none does.

    >>> risks, correct = [0.1, 0.2, 0.8, 0.9], [True, False, True, False]
    >>> threshold_for_accuracy_floor(risks, correct, 0.5)
    0.8
    >>> threshold_for_accuracy_floor(risks, correct, 0.25), threshold_for_accuracy_floor(risks, correct, 0.0)
    (0.1, -inf)
    >>> threshold_for_accuracy_floor(risks, correct, 0.9)  # out of reach: answer everything
    0.9
    """
    if len(risks) != len(correct):
        raise ValueError(f"{len(risks)} risks but {len(correct)} verdicts")
    cut_offs = _cut_offs(risks)
    for cut_off in cut_offs:
        right = sum(ok for risk, ok in zip(risks, correct, strict=True) if risk <= cut_off)
        if right / max(len(risks), 1) >= min_accuracy - 1e-9:
            return cut_off
    return cut_offs[-1]


def threshold_for_coverage(
    risks: Sequence[float], answered: Sequence[bool], coverage: float
) -> float:
    """The cut-off whose gated dev coverage (items the model answers, not abstaining by
    itself, with risk <= cut-off, over all items) is nearest `coverage`; of two equally
    near, the higher coverage; of cut-offs with the same coverage, the lowest.

    >>> risks, answered = [0.1, 0.2, 0.8, 0.9], [True, True, False, True]
    >>> [threshold_for_coverage(risks, answered, c) for c in (0.5, 0.6, 0.625, 0.0)]
    [0.2, 0.2, 0.9, -inf]
    """
    if len(risks) != len(answered):
        raise ValueError(f"{len(risks)} risks but {len(answered)} answered flags")
    n = max(len(risks), 1)

    def gap_then_coverage(cut_off: float) -> tuple[float, float]:
        kept = sum(a for risk, a in zip(risks, answered, strict=True) if risk <= cut_off) / n
        return round(abs(kept - coverage), 12), -kept

    return min(_cut_offs(risks), key=gap_then_coverage)
