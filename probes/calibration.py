"""Calibration of a probe's raw logit into a probability of a wrong answer.

Fit on the validation split (never on train, where the probe's logits are overconfident,
nor on test); applied at run time with numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
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
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], labels)
        return Calibrator("platt", a=float(model.coef_[0, 0]), b=float(model.intercept_[0]))
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
