"""Scoring with a fitted probe at run time: numpy only (no scikit-learn), microseconds.

scorer = RiskScorer(load_probe(path, expected_fingerprint=engine.fingerprint))
engine.generate(prompts, params, risk_fn=scorer)  # each Generation's `risk`, from its prefill
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from engines.base import PromptStates
from probes.artifact import Probe

FloatArray = NDArray[np.float64]


def probe_logits(weights: Mapping[str, FloatArray], features: ArrayLike) -> FloatArray:
    """Raw logits (N,) of a probe's weights on features (N, D): standardize, then a linear
    map or the MLP (ReLU hidden layers, one output)."""
    x = np.asarray(features, dtype=np.float64)  # (N, D)
    h = (x - weights["scaler.mean"]) / weights["scaler.scale"]  # (N, D)
    if "linear.weight" in weights:
        return h @ weights["linear.weight"] + weights["linear.bias"][0]  # (N,)
    depth = sum(1 for name in weights if name.startswith("mlp.") and name.endswith(".weight"))
    for i in range(depth):
        h = h @ weights[f"mlp.{i}.weight"] + weights[f"mlp.{i}.bias"]  # (N, width_i)
        if i < depth - 1:
            h = np.maximum(h, 0.0)
    return h[:, 0]


class RiskScorer:
    """Calibrated probability that the answer to a prompt will be wrong, from its states."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.spec = probe.spec
        self.calibrator = probe.calibrator
        self.weights = {name: np.asarray(a, dtype=np.float64) for name, a in probe.weights.items()}
        self.input_dim = int(self.weights["scaler.mean"].shape[0])

    def logits(self, features: ArrayLike | torch.Tensor) -> FloatArray:
        """Uncalibrated logits (N,) of features (N, D)."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().double().numpy()
        x = np.asarray(features, dtype=np.float64)
        x = x[None, :] if x.ndim == 1 else x  # (N, D)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"probe {self.spec.name} expects features of width {self.input_dim}, "
                f"got shape {tuple(x.shape)}: is it the model the probe was fitted on?"
            )
        return probe_logits(self.weights, x)

    def score(self, features: ArrayLike | torch.Tensor) -> FloatArray:
        """Calibrated risks in [0, 1], shape (N,), of features (N, D)."""
        return self.calibrator(self.logits(features))

    def __call__(self, states: PromptStates) -> float:
        """Risk of one prompt from its prefill states: a `risk_fn` for `Engine.generate`."""
        return float(self.score(self.spec.vector(states))[0])
