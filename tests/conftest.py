"""Shared fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis for integration tests (`AUTODIDACT_TEST_REDIS_URL`).

    Unset: skip with the way to get one, or fail when CI=true (CI must run them)."""
    url = os.environ.get("AUTODIDACT_TEST_REDIS_URL", "").strip()
    if url:
        return url
    reason = (
        "no Redis: AUTODIDACT_TEST_REDIS_URL is unset; run "
        "`bash scripts/with-redis.sh .venv/bin/python -m pytest ...` to start a throwaway one"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so Redis tests must not skip)")
    pytest.skip(reason)
