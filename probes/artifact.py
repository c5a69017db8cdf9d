"""A fitted probe on disk: `weights.safetensors` plus `card.json`.

Weights (float64 numpy arrays): `scaler.mean` (D,), `scaler.scale` (D,), then either
`linear.weight` (D,) and `linear.bias` (1,) for logistic regression, or `mlp.{i}.weight`
(in, out) and `mlp.{i}.bias` (out,) for the MLP (ReLU between layers, one output logit).
The card says what the probe reads (model fingerprint, layers, feature kind, prompt-template
hash), how it was fitted and measured, and how its logit is calibrated. A probe is valid
for one model fingerprint: loading it for another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.numpy import load_file, save_file

from probes.calibration import Calibrator
from probes.features import FeatureSpec

PROBE_SCHEMA_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
Weights = dict[str, NDArray[np.float64]]


class ProbeLoadError(ValueError):
    """A probe folder cannot be read; the message names the file and the fix."""


class ProbeMismatchError(ValueError):
    """A probe does not belong to the model or prompt format it is applied to."""


class StaleProbeError(ProbeMismatchError):
    """The probe was fitted on another model version (fingerprint)."""


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(description="seed of the grouped hash split")
    fractions: tuple[float, float, float] = Field(description="train, validation, test shares")
    sizes: dict[str, int] = Field(description="labelled items per split, truncated excluded")


class ProbeCard(BaseModel):
    """Everything needed to trust, reuse or refuse a probe."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(
        default=PROBE_SCHEMA_VERSION, description="bumped on any field change"
    )
    model_name: str = Field(description="the engine's model name when fitted")
    fingerprint: str = Field(description="content hash of the model weights the probe reads")
    template_hash: str = Field(description="hash of the prompt format (chat template)")
    feature: str = Field(description="feature name, e.g. layer.12.query_token")
    layers: list[int] = Field(description="layers read, concatenated in this order")
    feature_kind: str = Field(description="query_token or prompt_mean (or a VLM kind)")
    input_dim: int = Field(description="D = len(layers) x hidden size")
    estimator: Literal["logreg", "mlp"]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    task: str = Field(description="task whose labels the probe was fitted on")
    max_new_tokens: int | None = Field(
        default=None, description="token budget of the labelled answers"
    )
    split: SplitInfo
    labels: dict[str, int] = Field(default_factory=dict, description="label counts (LabelSummary)")
    metrics: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="split name -> metrics (validation at fit time)"
    )
    calibration: dict[str, Any] = Field(description="Calibrator.to_json(), fit on validation")
    weights_sha256: str = ""
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class Probe:
    card: ProbeCard
    weights: Weights

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(self.card.feature_kind, tuple(self.card.layers))

    @property
    def calibrator(self) -> Calibrator:
        return Calibrator.from_json(self.card.calibration)

    def save(self, folder: str | Path) -> Path:
        """Write weights, then the card (last, atomically). Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: np.ascontiguousarray(array) for name, array in self.weights.items()}
        weights_tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        save_file(tensors, str(weights_tmp))
        digest = _sha256(weights_tmp)
        os.replace(weights_tmp, folder / WEIGHTS_FILE)
        self.card = self.card.model_copy(update={"weights_sha256": digest})
        card_tmp = folder / f".{CARD_FILE}.tmp-{os.getpid()}"
        card_tmp.write_text(self.card.model_dump_json(indent=2))
        os.replace(card_tmp, folder / CARD_FILE)
        return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_fingerprint(card: ProbeCard, fingerprint: str, *, where: str = "probe") -> None:
    """Raise StaleProbeError (one line, with the fix) unless the fingerprints match."""
    if card.fingerprint != fingerprint:
        raise StaleProbeError(
            f"{where} was made for model fingerprint {card.fingerprint}, model is {fingerprint}: "
            "refit with `autodidact probe sweep`"
        )


def check_template(card: ProbeCard, template_hash: str, *, where: str = "probe") -> None:
    if card.template_hash != template_hash:
        raise ProbeMismatchError(
            f"{where} was made for prompt-template hash {card.template_hash}, the engine formats "
            f"prompts as {template_hash}: use the same chat template or refit with "
            "`autodidact probe sweep`"
        )


def load_probe(
    path: str | Path,
    *,
    expected_fingerprint: str | None = None,
    expected_template_hash: str | None = None,
) -> Probe:
    """Read a probe folder; refuse it for a model with another fingerprint (StaleProbeError)
    or another prompt template (ProbeMismatchError) when those are given."""
    folder = Path(path)
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise ProbeLoadError(f"{folder}: not a probe (needs {CARD_FILE} and {WEIGHTS_FILE})")
    try:
        raw = json.loads(card_path.read_text())
    except json.JSONDecodeError as error:
        raise ProbeLoadError(f"{card_path}: not JSON ({error.msg})") from error
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != PROBE_SCHEMA_VERSION:
        raise ProbeLoadError(
            f"{card_path}: schema_version {version!r}, this code reads {PROBE_SCHEMA_VERSION}; "
            "refit with `autodidact probe sweep`"
        )
    try:
        card = ProbeCard.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ProbeLoadError(f"{card_path}: field {field!r}: {first['msg']}") from error
    if card.weights_sha256 and _sha256(weights_path) != card.weights_sha256:
        raise ProbeLoadError(
            f"{weights_path}: content hash differs from the card's; refit or restore"
        )
    if expected_fingerprint is not None:
        check_fingerprint(card, expected_fingerprint, where=f"probe {folder}")
    if expected_template_hash is not None:
        check_template(card, expected_template_hash, where=f"probe {folder}")
    weights = {
        name: array.astype(np.float64) for name, array in load_file(str(weights_path)).items()
    }
    return Probe(card, weights)
