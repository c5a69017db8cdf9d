"""The model and its gate as a command names them: `--model` (a model, or `models:/NAME@ALIAS`
from MLflow's model registry) with `--probe`, `--low`, `--high`, or `--session ID` (what a
finished session made). `answer`, `eval` and `serve` share these options and this
resolution; each probe is read before any model loads and checked against the model once
it has."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import fail
from probes.calibration import Thresholds

ProbeOption = Annotated[
    Path | None,
    typer.Option(
        "--probe",
        help="Probe folder (from `probe sweep` or a session) fitted on the model: each "
        "answer's risk, read from its own prefill, routes --refine.",
    ),
]
LowOption = Annotated[
    float, typer.Option("--low", help="risk_adaptive: answer greedily at or below this risk.")
]
HighOption = Annotated[
    float,
    typer.Option("--high", help="abstain / risk_adaptive: abstain (or fall back) above this risk."),
]
SessionOption = Annotated[
    str | None,
    typer.Option(
        "--session",
        help="A finished session under --root: its best version, the probe fitted on that "
        "version and the thresholds chosen for it (they replace --model, --probe, --low and "
        "--high). --model models:/NAME@best does the same from MLflow's model registry.",
    ),
]


@dataclass(frozen=True)
class Gate:
    """What a command answers with: the model to load, its probe folder and thresholds, and
    a name for it (the session's version, or the registry's)."""

    model: str
    probe: Path | None
    thresholds: Thresholds
    name: str | None = None
    # what the session that made it used: `eval`'s splits and answer budget, the abstain text
    split_seed: int = 0
    max_new_tokens: int | None = None
    abstention_text: str | None = None


def session_model(root: Path, session_id: str, *, needs_probe: bool) -> Gate:
    """What session `session_id` made, read from its folder; a one-line error when it has
    not finished, or when the gate needs a probe the session did not fit on that version."""
    from storage.layout import SessionLayout

    layout = SessionLayout.of(root, session_id)
    try:
        record = json.loads(layout.model_json.read_text())
    except FileNotFoundError:
        raise fail(
            f"session {session_id!r} under {root} has no {layout.MODEL_JSON}: it has not finished "
            "(resume it), or the --root is not the one it ran with"
        ) from None
    version = record["version"]
    if needs_probe and record["probe"] is None:
        raise fail(
            f"session {session_id!r}'s probe was fitted on another version than its best, "
            f"{version}: fit one on it (autodidact probe sweep --model {record['path']}) and "
            "pass --model and --probe, or use --refine none"
        )
    return Gate(
        model=record["path"] or record["model"],
        probe=layout.folder / record["probe"] if record["probe"] else None,
        thresholds=Thresholds.chosen(record.get("thresholds")),
        name=f"{session_id}-{version}",
        split_seed=record.get("split_seed", 0),
        max_new_tokens=record.get("max_new_tokens"),
        abstention_text=record.get("abstention_text"),
    )


def registry_model(uri: str, root: Path) -> Gate:
    """`models:/NAME@ALIAS` (or `/VERSION`) from the MLflow model registry of --root (or
    $MLFLOW_TRACKING_URI): its weights, and the gate registered with it."""
    import os

    from storage.mlflow_store import default_tracking_uri
    from storage.registry import resolve

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    try:
        found = resolve(uri, tracking_uri)
    except ValueError as error:
        raise fail(str(error)) from None
    return Gate(
        model=found.source,
        probe=found.probe,
        thresholds=Thresholds.chosen(found.thresholds),
        name=found.name,
        split_seed=found.split_seed,
        max_new_tokens=found.max_new_tokens,
        abstention_text=found.abstention_text,
    )


def load_probe_folder(folder: Path) -> Any:
    """The probe in `folder`, read before any model loads (a wrong path costs nothing)."""
    from probes.artifact import load_probe

    return load_probe(folder)


def probe_risk(fitted: Any, engine: Any, folder: Path) -> Any:
    """The probe as a risk function on `engine`, refused when fitted on another model."""
    from probes.artifact import check_fingerprint
    from probes.runtime import RiskScorer

    check_fingerprint(fitted.card, engine.fingerprint, where=f"probe {folder}")
    return RiskScorer(fitted)


def chosen_gate(
    model: str,
    probe: Path | None,
    low: float,
    high: float,
    *,
    session: str | None,
    root: Path,
    needs_probe: bool,
) -> Gate:
    """The gate the options name (`--session` and `models:/` replace --model, --probe, --low
    and --high); a one-line error when the thresholds are out of order."""
    if session is not None or model.startswith("models:/"):
        made = (
            session_model(root, session, needs_probe=needs_probe)
            if session is not None
            else registry_model(model, root)
        )
        return replace(made, probe=made.probe or probe)
    if not 0 <= low <= high <= 1:
        raise fail(f"need 0 <= --low <= --high <= 1 (got {low}, {high})")
    return Gate(model, probe, Thresholds(low, high))
