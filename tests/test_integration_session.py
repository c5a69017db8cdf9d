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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--task", "nope"], "unknown task 'nope'"),
        (["run", "--set", "monitor.max_cycle=2"], "did you mean 'monitor.max_cycles'"),
        (["run", "--task", "jsonl"], "needs a file"),
    ],
)
def test_bad_run_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = autodidact(*args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_policy_file_is_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("monitor:\n  max_cycles: -1\n")
    result = autodidact("policy", "validate", str(policy), timeout=120)
    assert result.returncode == 2
    assert "monitor.max_cycles" in result.stderr


def test_task_with_no_train_items_is_exit_2(tmp_path: Path) -> None:
    rows = tmp_path / "one.jsonl"
    # one group only: with seed 0 it lands in a single split; make sure it is not train
    from tasks.base import split_of

    group = next(g for g in (f"g{i}" for i in range(100)) if split_of(g, 0) != "train")
    rows.write_text(json.dumps({"question": "2+2?", "answer": "4", "group": group}) + "\n")
    result = autodidact(
        "run", "--task", "jsonl", "--path", str(rows), "--root", str(tmp_path), timeout=120
    )
    assert result.returncode == 2
    assert "no train items" in result.stderr
