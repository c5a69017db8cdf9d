"""What the browser tests share: Debian's chromium (never `playwright install`) and the
folder their screenshots go to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.ci_rules import skip_or_fail_in_ci


def chromium_or_skip() -> str:
    """The chromium binary; skip where it is absent, fail in CI (`make test` installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is not None:
        return path
    skip_or_fail_in_ci("no chromium on this machine: apt-get install chromium")


def screenshot_folder() -> Path:
    """`AUTODIDACT_TEST_ARTIFACTS` (`make test` sets it), else ./test-artifacts; created."""
    shots = Path(os.environ.get("AUTODIDACT_TEST_ARTIFACTS", "test-artifacts"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots
