"""`autodidact run --preset quick` on the real default model, end to end (CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def autodidact(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_quick_session_runs_to_the_monitors_stop(tmp_path: Path) -> None:
    result = autodidact(
        "run", "--preset", "quick", "--root", str(tmp_path), "--session-id", "quick-ci"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "decision" in result.stdout
    assert "test accuracy: initial v0" in result.stdout
    folder = tmp_path / "sessions" / "quick-ci"
    report = json.loads((folder / "report.json").read_text())
    assert report["cycles"][0]["version"] == "v0"
    assert report["decisions"][-1]["action"] == "stop"
    manifest = json.loads((folder / "manifest.json").read_text())
    names = {entry["name"] for entry in manifest["artifacts"]}
    assert {"policy.json", "report.json", "cycle-1/attempts.jsonl"} <= names
    trace = autodidact("trace", "quick-ci", "--root", str(tmp_path), "--json")
    assert trace.returncode == 0
    kinds = {json.loads(line)["kind"] for line in trace.stdout.splitlines()}
    assert {"node_end", "decision", "metric", "session"} <= kinds
