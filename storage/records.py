"""Records the store keeps: trace events and the sessions registry.

They are a file format: changing a field means bumping `schema_version`."""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.urls import mask_password

EVENT_SCHEMA_VERSION = 3  # 2: `data_type` names the record `data` holds; 3: RENAMED_NODES
# The graph's nodes that version 3 named for what they do: an older event's `node` and key
# read with the new name, so readers filter on one vocabulary.
RENAMED_NODES = {"probe": "fit_probe_on_answers", "refit": "refit_probe_on_samples"}
SESSION_SCHEMA_VERSION = 1

EventKind = Literal[
    "node_start",
    "node_end",
    "action",
    "decision",
    "metric",
    "progress",
    "artifact",
    "error",
    "session",
]
SessionStatus = Literal["running", "finished", "failed", "interrupted"]


def json_default(value: Any) -> Any:
    """JSON fallback for event payloads: numpy scalars/arrays and paths, else `str`.

    >>> import json, pathlib
    >>> json.dumps({"p": pathlib.Path("a/b")}, default=json_default)
    '{"p": "a/b"}'
    """
    for method in ("item", "tolist"):  # numpy scalars, arrays, torch tensors
        if callable(getattr(value, method, None)):
            try:
                return getattr(value, method)()
            except (TypeError, ValueError, RuntimeError):
                continue
    return str(value)


class Event(BaseModel):
    """One thing a node did or decided, as persisted in the session's event log."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = Field(
        default=EVENT_SCHEMA_VERSION, description="Version of this record's layout."
    )
    session_id: str = Field(description="Session (LangGraph thread id) the event belongs to.")
    seq: int = Field(
        default=0,
        ge=0,
        description="Position in the session's log, from 1; assigned by the log, 0 before append.",
    )
    key: str = Field(
        min_length=1,
        description="Idempotency key, unique per session (e.g. 'c2/optimize/5'); "
        "re-appending a key after a crash-resume is a no-op.",
    )
    ts: float = Field(description="Unix time the event was emitted, in seconds.")
    kind: EventKind = Field(description="What sort of event this is.")
    node: str | None = Field(default=None, description="Graph node that emitted it, if any.")
    cycle: int | None = Field(default=None, description="Improvement cycle it belongs to, if any.")
    message: str = Field(default="", description="One human-readable line.")
    data_type: str | None = Field(
        default=None,
        description="Which record `data` holds (e.g. 'dev_metrics', 'decision'), named by "
        "the writer's codec (graph.events); None in version 1, which did not say.",
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="Structured payload (JSON-serializable values)."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_nodes(cls, fields: Any) -> Any:
        """An event written before version 3 names its node (and key) as the graph now does.

        >>> Event(schema_version=2, session_id="s", key="c0/probe/1", ts=0, kind="error",
        ...       node="probe").key
        'c0/fit_probe_on_answers/1'
        """
        if not isinstance(fields, dict) or fields.get("schema_version", EVENT_SCHEMA_VERSION) >= 3:
            return fields
        node = RENAMED_NODES.get(fields.get("node") or "")
        if node is None:
            return fields
        parts = str(fields.get("key", "")).split("/")  # c{cycle}/{node}/{n}
        renamed = len(parts) > 2 and parts[1] == fields["node"]
        key = "/".join([parts[0], node, *parts[2:]]) if renamed else fields.get("key")
        return {**fields, "node": node, "key": key}


class SessionInfo(BaseModel):
    """One row of the sessions registry: what a session is and how far it got."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = Field(
        default=SESSION_SCHEMA_VERSION, description="Version of this record's layout."
    )
    session_id: str = Field(description="Session id, also the LangGraph thread id.")
    status: SessionStatus = Field(description="Lifecycle state of the session.")
    task: str = Field(description="Task suite the session improves on.")
    model: str = Field(description="Model the session started from.")
    store_url: str = Field(description="Store URL of the session, password masked.")
    created_at: float = Field(description="Unix time the session was first recorded.")
    updated_at: float = Field(description="Unix time of the last update to this record.")
    cycles: int = Field(default=0, ge=0, description="Improvement cycles completed.")
    best_accuracy: float | None = Field(
        default=None, description="Best held-out accuracy so far, if any was measured."
    )
    pid: int | None = Field(default=None, description="Process id that last ran the session.")
    host: str | None = Field(default=None, description="Host name of that process.")

    def process_gone(self) -> bool:
        """A "running" session whose process no longer exists on this host: killed
        (SIGKILL, power loss) before it could record how it ended. Sessions run elsewhere
        cannot be checked from here and count as alive."""
        if self.status != "running" or self.pid is None or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by another user
            return False
        return False

    @property
    def shown_status(self) -> str:
        """The status for people: a killed "running" session reads "interrupted"."""
        return "interrupted" if self.process_gone() else self.status

    @field_validator("store_url")
    @classmethod
    def _mask(cls, url: str) -> str:
        return mask_password(url)
