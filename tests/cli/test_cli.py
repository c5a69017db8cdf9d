"""The CLI's contract: help everywhere, bad input is one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import make_app

runner = CliRunner()
app = make_app()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("models", "generate", "eval", "tasks"):
        assert command in result.output


def test_the_preset_help_names_every_preset() -> None:
    from cli.common import PRESET_NAMES
    from graph.policy import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in PRESETS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--task", "capitals", "--limit", "0"], "--limit must be at least 1"),
        (["eval", "--task", "nope", "--limit", "2"], "unknown task 'nope'"),
        (["eval", "--task", "jsonl", "--limit", "2"], "needs a file"),
        (["eval", "--model", "/no/such/model", "--limit", "2"], "not found"),
        (["tasks", "show", "nope"], "unknown task"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_empty_jsonl_task_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["eval", "--task", "jsonl", "--path", str(empty)])
    assert result.exit_code == 2
    assert "no usable row" in result.output


def test_tasks_show_prints_items() -> None:
    result = runner.invoke(app, ["tasks", "show", "arithmetic", "--limit", "2"])
    assert result.exit_code == 0
    assert "What is" in result.output


def test_the_cycle_tables_fit_80_columns_without_cutting_a_number() -> None:
    from rich.console import Console

    from cli import view

    row = {
        "cycle": 12, "version": "v12", "accuracy": 0.125, "hallucination_rate": 0.875,
        "abstention_rate": 0.0, "tokens_sampled": 123456, "wasted_share": 0.81,
        "decision": "refit_probe", "predicted_accuracy": 0.19, "probe_auroc": 0.6123,
        "stale_probe_auroc": 0.5987, "logprob_auroc": 0.5561, "entropy_auroc": 0.5444,
    }  # fmt: skip
    final = {
        "cycles": [row],
        "initial": {"version": "v0", "test_accuracy": 0.2},
        "final": {"version": "v12", "test_accuracy": 0.4, "n_test": 60},
        "stop_reason": "cycle budget spent",
        "wall_seconds": 100.0,
    }
    narrow = Console(width=80, record=True)
    original, view.console = view.console, narrow
    try:
        view.print_cycle_table({"final": final})
    finally:
        view.console = original
    text = narrow.export_text()
    assert "…" not in text
    for shown in ("123456", "refit_probe", "0.612", "0.599", "0.556", "0.544", "81%", "19%"):
        assert shown in text


def test_answer_takes_its_sampling_defaults_from_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """k, the temperature and the token budget are the policy's (refine.k,
    refine.temperature, evaluate.max_new_tokens), not copies of them."""
    import agents.refine
    from agents.evaluate import EvaluatePolicy
    from agents.refine import RefinePolicy
    from cli.common import Loaders
    from tests.tiny_models import tiny_engine

    seen: dict[str, object] = {}

    def spy(engine, prompts, **options):  # type: ignore[no-untyped-def]
        seen.update(options)
        return real(engine, prompts, **options)

    real = agents.refine.refine_answers
    monkeypatch.setattr(agents.refine, "refine_answers", spy)
    loaders = Loaders(load_engine=lambda _model: tiny_engine())
    result = runner.invoke(make_app(loaders), ["answer", "2+2?", "--refine", "self_consistency"])
    assert result.exit_code == 0, result.output
    assert (seen["k"], seen["temperature"], seen["max_new_tokens"]) == (
        RefinePolicy().k,
        RefinePolicy().temperature,
        EvaluatePolicy().max_new_tokens,
    )
