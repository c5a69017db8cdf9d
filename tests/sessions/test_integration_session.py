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
    assert {"policy.json", "report.json", "report.html", "cycle-1/attempts.jsonl"} <= names
    assert f"report (opens from disk): {folder / 'report.html'}" in result.stdout
    assert "cycle-1/features" in names, "acquire saves the prefill its samples captured"
    assert any(n.startswith("probes/cycle-") for n in names), "a probe from the loop's samples"
    evaluated = [row for row in report["cycles"] if row["cycle"] >= 1]
    assert evaluated and all(row["mean_risk"] is not None for row in evaluated), (
        "the quick session exercises the risk signal on every new version"
    )
    trace = autodidact("trace", "quick-ci", "--root", str(tmp_path), "--json")
    assert trace.returncode == 0
    kinds = {json.loads(line)["kind"] for line in trace.stdout.splitlines()}
    assert {"node_end", "decision", "metric", "session"} <= kinds


def test_a_task_the_model_nearly_always_gets_wrong_gets_a_probe_in_its_first_cycle(
    tmp_path: Path,
) -> None:
    """2-digit subtraction and multiplication as a user's JSONL file: the initial model is
    right a few percent of the time, too rarely for a probe on greedy answers; the probe
    fitted on cycle 1's samples (soft pass-rate labels) exists all the same."""
    from tasks import get_task

    items = get_task("arithmetic", n=200, digits=2, operators="-*").items
    path = tmp_path / "hard.jsonl"
    path.write_text(
        "".join(json.dumps({"question": i.prompt, "answer": i.answers[0]}) + "\n" for i in items)
    )
    result = autodidact(
        "run", "--task", "jsonl", "--path", str(path), "--preset", "quick",
        "--root", str(tmp_path), "--session-id", "hard",
        "--set", "monitor.max_cycles=1", "--set", "probe.items=16",
        "--set", "acquire.prompts_per_cycle=24", "--set", "acquire.samples_per_prompt=4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "sessions/hard/manifest.json").read_text())
    names = {entry["name"] for entry in manifest["artifacts"]}
    assert "probes/cycle-1" in names, result.stdout[-3000:]
