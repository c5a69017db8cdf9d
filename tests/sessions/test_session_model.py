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
from tests.session_support import run_tiny_session
from tests.tiny_models import tiny_engine

SPLIT_SEED = 3  # not eval's default split seed (0): `eval --session` must read the session's
SESSION_SETS = {
    "monitor.max_cycles": "1",
    "refine.gate_rule": "accuracy_floor",
    "monitor.accuracy_floor": "0.85",
    "seed": str(SPLIT_SEED),
}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("made")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        state, events = run_tiny_session(store, "made", **SESSION_SETS)
    return root, dict(state) | {"events": events}


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
    assert (record["split_seed"], record["max_new_tokens"]) == (SPLIT_SEED, 6)


def test_the_shipped_gate_answers_the_fewest_that_keep_the_accuracy_floor(
    session: tuple[Path, dict[str, Any]],
) -> None:
    """`refine.gate_rule: accuracy_floor`: on the best version's dev answers, scored by the
    probe fitted on it, answering up to the shipped cut-off keeps the floor (0.85 x the
    initial model's dev accuracy) and answering one fewer would not."""
    from graph.cycle_data import load_dev_answers
    from probes.artifact import load_probe
    from probes.evaluation import score_prompts
    from storage import ArtifactStore

    root, state = session
    layout = SessionLayout.of(root, "made")
    record = json.loads(layout.model_json.read_text())
    assert record["gate_rule"] == "accuracy_floor" and record["probe"] is not None
    best, history = state["best_version"], state["history"]
    cycle = max(h.cycle for h in history if h.version == best)
    answers = load_dev_answers(ArtifactStore(layout.folder), cycle, best)
    probe = load_probe(layout.folder / record["probe"])
    risks = score_prompts(
        load(record["path"] or record["model"]), probe, [a.prompt for a in answers]
    )
    floor = 0.85 * next(h.accuracy for h in history if h.version == "v0")

    def gated_accuracy(cut_off: float) -> float:
        right = sum(a.correct for a, risk in zip(answers, risks, strict=True) if risk <= cut_off)
        return right / len(answers)

    high = record["thresholds"]["high"]
    assert gated_accuracy(high) >= floor - 1e-9
    fewer = [risk for risk in risks if risk < high - 1e-6]
    if fewer:
        assert gated_accuracy(max(fewer)) < floor
    assert record["thresholds"]["low"] <= high
    notes = [e for e in state["events"] if e.node == "finalize" and "gate shipped" in e.message]
    assert len(notes) == 1, [e.message for e in state["events"] if e.node == "finalize"]


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


def test_gated_eval_of_a_session_reads_its_test_split_budget_and_gate(
    session: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`eval --session S --split test --refine abstain`: the session's own test split (its
    split seed), its answer budget and its shipped cut-off."""
    from tasks import get_task

    root, _ = session
    argv = ["eval", "--session", "made", "--root", str(root), "--task", "arithmetic"]
    argv += ["--split", "test", "--limit", "5", "--refine", "abstain", "--out", str(tmp_path)]
    result = CliRunner().invoke(make_app(Loaders(load_engine=load)), argv)
    assert result.exit_code == 0, result.output
    (folder,) = tmp_path.glob("eval-*")
    summary = json.loads((folder / "summary.json").read_text())
    record = json.loads(SessionLayout.of(root, "made").model_json.read_text())
    assert summary["thresholds"] == record["thresholds"]
    assert (summary["split_seed"], summary["max_new_tokens"]) == (SPLIT_SEED, 6)
    rows = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    expected = get_task("arithmetic").split("test", seed=SPLIT_SEED)[:5]
    assert [row["id"] for row in rows] == [item.id for item in expected]
    high = record["thresholds"]["high"]
    assert all(row["abstained"] == (row["risk"] > high) for row in rows)


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
