"""What a session made, in MLflow's model registry: its initial and best versions as
versions of one registered model, by path (no copies: a version is about 0.5 GB), with
the aliases `initial` and `best` (the latest finished session's) and `SESSION-initial`,
`SESSION-best` (each session's own), the gate (probe folder, thresholds, abstention text)
and the lineage (session, cycle, version, run) as tags. `models:/NAME@best` then names the
model with its gate for `answer`, `eval` and `serve`.

The registered model is named from the task and the base model's fingerprint (every
session that improves that model on that task adds versions to it), or as the user says.
Registering is idempotent: a resumed session finds its versions by their tags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.mlflow_store import mlflow_module

SESSION_TAG, VERSION_TAG = "autodidact.session", "autodidact.version"


def registered_name(record: dict[str, Any], chosen: str | None = None) -> str:
    """The registered model's name: `chosen`, else task and base fingerprint.

    >>> registered_name({"task": "arithmetic", "base_fingerprint": "4f2c9a1b0d3e7788"})
    'arithmetic-4f2c9a1b0d3e'
    """
    return chosen or f"{record['task']}-{record['base_fingerprint'][:12]}".replace(":", "-")


def register_session(
    client: Any, record: dict[str, Any], *, run_id: str, session_id: str, name: str
) -> dict[str, str]:
    """The session's initial and best versions in the registry (each once), aliased
    `initial` and `best`; the registry version of each alias."""
    mlflow = mlflow_module()
    try:
        client.create_registered_model(name, description="versions made by autodidact sessions")
    except mlflow.exceptions.MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
    aliases = {}
    for alias, entry in (("initial", record["initial"]), ("best", record)):
        version = _find(client, name, session_id, entry["version"]) or client.create_model_version(
            name,
            source=str(entry["path"] or entry["model"]),
            run_id=run_id,
            tags=_tags(record, entry, session_id),
        )
        for named in (alias, f"{session_id}-{alias}"):  # the latest session's, and this one's
            client.set_registered_model_alias(name, named, version.version)
        aliases[alias] = str(version.version)
    return aliases


def _find(client: Any, name: str, session_id: str, version: str) -> Any:
    found = client.search_model_versions(
        f"name = '{name}' and tags.`{SESSION_TAG}` = '{session_id}' "
        f"and tags.`{VERSION_TAG}` = '{version}'"
    )
    return found[0] if found else None


def _tags(record: dict[str, Any], entry: dict[str, Any], session_id: str) -> dict[str, str]:
    gate = entry is record  # the best version carries the session's gate
    tags = {
        SESSION_TAG: session_id,
        VERSION_TAG: entry["version"],
        "autodidact.fingerprint": entry["fingerprint"],
        "autodidact.cycle": str(entry.get("cycle", 0)),
    }
    if gate and record.get("probe_path"):
        tags["autodidact.probe"] = record["probe_path"]
        tags["autodidact.thresholds"] = json.dumps(record.get("thresholds") or {})
        tags["autodidact.abstention_text"] = record["abstention_text"]
    if gate and "split_seed" in record:  # the session's splits and answer budget
        tags["autodidact.split_seed"] = str(record["split_seed"])
        tags["autodidact.max_new_tokens"] = str(record["max_new_tokens"])
    return tags


@dataclass(frozen=True)
class RegisteredModel:
    """A registry version as `answer`/`eval`/`serve` use it."""

    source: str  # the merged weights' folder, or the base model's name
    probe: Path | None
    thresholds: dict[str, float]
    name: str
    split_seed: int = 0  # the session's split seed (`eval --split`)
    max_new_tokens: int | None = None  # the session's answer budget
    abstention_text: str | None = None


def resolve(uri: str, tracking_uri: str) -> RegisteredModel:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` on the registry at `tracking_uri`;
    ValueError (one line) when it is not there."""
    mlflow = mlflow_module()
    client = mlflow.MlflowClient(tracking_uri)
    rest = uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = rest.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except (mlflow.exceptions.MlflowException, ValueError):
        raise ValueError(f"{uri} is not in the model registry at {tracking_uri}") from None
    tags = version.tags or {}
    probe = tags.get("autodidact.probe")
    return RegisteredModel(
        source=version.source,
        probe=Path(probe) if probe else None,
        thresholds=json.loads(tags.get("autodidact.thresholds") or "{}"),
        name=f"{name}-v{version.version}",
        split_seed=int(tags.get("autodidact.split_seed") or 0),
        max_new_tokens=int(tokens) if (tokens := tags.get("autodidact.max_new_tokens")) else None,
        abstention_text=tags.get("autodidact.abstention_text"),
    )
