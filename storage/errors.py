"""Errors a user can fix: each message is one line naming the URL or artifact and the fix."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store URL that cannot be opened or used (bad scheme, unreachable Redis, ...)."""


class ArtifactError(StoreError):
    """An artifact that is not in the session's manifest."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact whose bytes on disk no longer match the hash in the manifest."""


class EventVersionError(StoreError):
    """A logged event written by a newer autodidact, in a layout this one does not know."""


class EventDataError(StoreError):
    """A logged event whose data is not the record its data type names."""
