"""The one rule for tests that need something this machine may lack (Redis, vLLM, Ray,
chromium): skip with the way to get it, except in CI (CI=true), where `make test` installs
everything and a missing piece must fail the run rather than hide behind a skip."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip the calling test for `reason`; in CI, fail it instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: `make test` installs it, so this test must not skip)")
    pytest.skip(reason)
