"""Shared fixtures."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.ci_rules import skip_or_fail_in_ci

# Sessions the tests run through the CLI are not tracked in MLflow (creating an MLflow
# store costs seconds to minutes); tests/views/test_tracking.py tracks its own session.
os.environ.setdefault("AUTODIDACT_TRACKING", "off")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests import mlflow directly


@pytest.fixture(scope="session", autouse=True)
def _close_vllm_engines() -> Any:
    """vLLM engines started by the tests end with the session, while output is open."""
    yield
    from tests.vllm_support import close_engines

    close_engines()


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
    skip_or_fail_in_ci(reason)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The `Outcome` of an uninterrupted run of tests/session_worker.py's tiny session at
    its default settings, run in this process (same engine, task, policy and seed): what an
    interrupted and resumed worker session must end like."""
    from storage import open_store
    from tests.session_support import run_tiny_session
    from tests.session_worker import outcome

    root = tmp_path_factory.mktemp("reference")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        run_tiny_session(store, "reference")
        return outcome(store, "reference")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(record, folder) of the tiny shapes VLM, trained once per test session (about a
    minute) into the default folder of a temp cache: what the VLM tests load."""
    from agents import vlm_training as vlm

    cache = tmp_path_factory.mktemp("vlm-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTODIDACT_CACHE", str(cache))
        record = vlm.run(vlm.TINY_RECIPE)
        return record, vlm.default_folder(vlm.TINY_RECIPE)
