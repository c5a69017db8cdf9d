"""Durable sessions: checkpointers, event log, artifact store.

`open_store(url, root)` is the entry point; `sqlite:///...` (default, zero setup) and
`redis://...` (shared, multi-process, live-streamed) offer the same interfaces."""

from storage.artifacts import Artifact, ArtifactStore, Manifest
from storage.checkpointer import open_checkpointer
from storage.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    EventDataError,
    EventVersionError,
    StoreError,
)
from storage.events import EventLog, RedisEventLog, SqliteEventLog
from storage.records import Event, EventKind, SessionInfo, SessionStatus
from storage.store import Store, default_store_url, open_store
from storage.urls import mask_password

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactStore",
    "Event",
    "EventDataError",
    "EventKind",
    "EventLog",
    "EventVersionError",
    "Manifest",
    "RedisEventLog",
    "SessionInfo",
    "SessionStatus",
    "SqliteEventLog",
    "Store",
    "StoreError",
    "default_store_url",
    "mask_password",
    "open_checkpointer",
    "open_store",
]
