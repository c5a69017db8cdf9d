"""What a finished session made, named by its id: `model.json` records the best version
and the gate to serve it with, and `eval --session` / `serve --session` take them from
there (a tiny session; the engines are the tiny model's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import Loaders
from storage import open_store
from storage.layout import SessionLayout
from tests.session_support import odd_length, run_with_verifier
from tests.tiny_models import tiny_engine


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("made")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        state, _ = run_with_verifier(store, odd_length, "made", **{"monitor.max_cycles": "1"})
    return root, dict(state)


def load(model: str) -> Any:
    from engines.hf import HFEngine

    return HFEngine.load(model) if Path(model).is_dir() else tiny_engine()


def test_a_finished_session_records_its_best_version_and_gate(
    session: tuple[Path, dict[str, Any]],
) -> None:
    root, state = session
    record = json.loads(SessionLayout.of(root, "made").model_json.read_text())
    best = state["best_version"]
    assert record["version"] == best
    assert record["fingerprint"] == state["versions"][best]["fingerprint"]
    assert record["path"] == state["versions"][best]["path"]
    fitted_on_best = state.get("probe_fingerprint") == record["fingerprint"]
    assert (record["probe"] == state["probe"]) if fitted_on_best else record["probe"] is None
    assert record["probe_fitted_on"] == state.get("probe_fingerprint")
    assert record["thresholds"] == state.get("thresholds")


def test_eval_session_measures_the_best_version(
    session: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, state = session
    argv = ["eval", "--session", "made", "--root", str(root), "--task", "arithmetic"]
    argv += ["--limit", "4", "--max-new-tokens", "4", "--out", str(tmp_path)]
    result = CliRunner().invoke(make_app(Loaders(load_engine=load)), argv)
    assert result.exit_code == 0, result.output
    (summary,) = tmp_path.glob("eval-*/summary.json")
    best = state["versions"][state["best_version"]]
    assert json.loads(summary.read_text())["fingerprint"] == best["fingerprint"]


def test_session_commands_refuse_what_the_session_cannot_give(
    session: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = session
    runner, loaders = CliRunner(), Loaders(load_engine=load)
    missing = runner.invoke(make_app(loaders), ["eval", "--session", "nope", "--root", str(root)])
    assert missing.exit_code == 2 and "has no model.json: it has not finished" in missing.output
    made = SessionLayout.of(root, "made").model_json
    record = json.loads(made.read_text())
    made.write_text(json.dumps(record | {"probe": None, "probe_fitted_on": "another"}))
    try:
        gated = runner.invoke(
            make_app(loaders),
            ["serve", "--session", "made", "--root", str(root), "--refine", "abstain"],
        )
    finally:
        made.write_text(json.dumps(record))
    assert gated.exit_code == 2 and "probe was fitted on another version" in gated.output


def test_a_probe_is_fitted_from_a_versions_own_dev_answers(tmp_path: Path) -> None:
    """The session's last step when its probe was fitted on another version than its best:
    the best version's dev answers (their verdicts) and their prompts' prefill states."""
    from agents.evaluate import ItemResult
    from agents.probe import fit_on_answers
    from probes.artifact import load_probe
    from tests.session_support import coin_flip_task

    task, engine = coin_flip_task(), tiny_engine()
    answers = [
        ItemResult(i.id, i.prompt, i.answers, "7", int(i.answers[0]) % 2 == 0, "stop")
        for i in list(task.items)[:80]
    ]
    fitted = fit_on_answers(
        engine,
        task,
        answers,
        name="probes/final-v0",
        folder=tmp_path / "final",
        max_new_tokens=6,
        target_precision=0.9,
        seed=0,
    )
    assert fitted.name == "probes/final-v0", fitted.error
    probe = load_probe(tmp_path / "final")
    assert probe.card.fingerprint == engine.fingerprint
    assert fitted.held_out_counts is not None and sum(fitted.held_out_counts) > 0
