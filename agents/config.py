"""The base of every stage's policy section: a frozen pydantic model that refuses unknown
keys and validates its defaults. Each stage module defines its own section beside its work
(as TRL keeps a trainer's config beside the trainer); `graph.policy` composes them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """A policy section: checked up front, immutable once resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
