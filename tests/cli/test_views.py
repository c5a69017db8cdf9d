"""The terminal views at 80 columns: nothing cut (ids and numbers whole), `--json` as
JSON Lines everywhere, and `trace` of a session that did not finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import console
from cli.probe import print_report_table
from storage import Event, SessionInfo, open_store

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
LONG_IDS = ("20261129-150102-arithmetic-1a2b3c", "20261129-150317-capitals-9f8e7d")


@pytest.fixture()
def columns_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(console, "_width", None)  # read COLUMNS now, not at import
    assert console.width == 80


def two_sessions(root: Path) -> None:
    """A finished and an interrupted session (its process gone), with a few events."""
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        for session_id, status in zip(LONG_IDS, ("finished", "interrupted"), strict=True):
            now = time.time()
            store.events.put_session(
                SessionInfo(
                    session_id=session_id,
                    status=status,
                    task="arithmetic",  # type: ignore[arg-type]
                    model="smollm2-135m-instruct",
                    store_url=store.url,
                    created_at=now,
                    updated_at=now,
                    cycles=3,
                    best_accuracy=0.5417,
                    pid=os.getpid(),
                )
            )
            store.events.append(
                Event(
                    session_id=session_id,
                    key="c0/fit_probe_on_answers/0",
                    kind="node_start",
                    node="fit_probe_on_answers",
                    cycle=0,
                    message="fit_probe_on_answers started",
                    ts=now,
                )
            )


def test_probe_eval_table_fits_80_columns_with_every_number_whole(columns_80: None) -> None:
    methods = ("probe", "mean_logprob", "mean_entropy", "self_consistency")
    row = {
        "auroc": 0.8461,
        "auroc_ci": (0.7251, 0.9472),
        "auprc": 0.884,
        "aurc": 0.1234,
        "accuracy_at_50": 0.9545,
        "accuracy_at_80": 0.8714,
        "ece": 0.0451,
        "cost_s_per_item": 0.000178,
    }
    report = SimpleNamespace(n_test=44, table=lambda: [{"method": m, **row} for m in methods])
    with console.capture() as captured:
        print_report_table(report)
    text = captured.get()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text
    for cell in ("AURC", "acc@50%", "acc@80%", "0.846", "0.73-0.95", "0.123", "0.955", "0.000178"):
        assert cell in text, cell
    assert "self" in text and "consistency" in text and "mean logprob" in text


def test_sessions_at_80_columns_shows_every_id_whole(tmp_path: Path) -> None:
    two_sessions(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sessions", "--root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    title, *lines = done.stdout.splitlines()
    assert title.startswith("sessions in sqlite:///"), (
        "the store's path, whole (the terminal wraps it)"
    )
    assert all(len(line) <= 80 for line in lines), done.stdout
    assert "…" not in done.stdout
    for session_id in LONG_IDS:
        assert any(session_id in line for line in lines), done.stdout
    assert "54.2%" in done.stdout and "interrupted" in done.stdout


def test_json_is_json_lines_for_sessions_and_trace(tmp_path: Path) -> None:
    two_sessions(tmp_path)
    listed = runner.invoke(make_app(), ["sessions", "--json", "--root", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert sorted(r["session_id"] for r in rows) == sorted(LONG_IDS)
    traced = runner.invoke(make_app(), ["trace", LONG_IDS[1], "--json", "--root", str(tmp_path)])
    (event,) = [json.loads(line) for line in traced.output.splitlines()]
    assert event["kind"] == "node_start" and event["session_id"] == LONG_IDS[1]


def test_trace_of_an_interrupted_session_says_where_it_stopped(tmp_path: Path) -> None:
    two_sessions(tmp_path)
    result = runner.invoke(make_app(), ["trace", LONG_IDS[1], "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "session interrupted in fit_probe_on_answers (cycle 0) after 1 logged events" in text
    assert f"autodidact resume {LONG_IDS[1]}" in text
