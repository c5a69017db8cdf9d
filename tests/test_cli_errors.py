"""Bad input to `run` and `policy validate` is one line and exit code 2, before any model
loads (unit tier: the app in this process, a model loader that must not be called)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner, Result

from cli.app import make_app
from cli.common import Loaders
from tasks.base import split_of


def no_model(_model: str) -> NoReturn:
    raise AssertionError("the model must not load")


def autodidact(*args: str) -> Result:
    return CliRunner().invoke(make_app(Loaders(load_engine=no_model)), list(args))


def assert_one_line_exit_2(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--set", "monitor.max_cycle=2"], "did you mean 'monitor.max_cycles'"),
        (["--task", "jsonl"], "needs a file"),
    ],
)
def test_bad_run_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    assert_one_line_exit_2(autodidact("run", *args, "--root", str(tmp_path)), message)


def test_invalid_policy_file_is_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("monitor:\n  max_cycles: -1\n")
    assert_one_line_exit_2(autodidact("policy", "validate", str(policy)), "monitor.max_cycles")


def test_task_with_no_train_items_is_exit_2(tmp_path: Path) -> None:
    rows = tmp_path / "one.jsonl"
    # one group only: with seed 0 it lands in a single split; make sure it is not train
    group = next(g for g in (f"g{i}" for i in range(100)) if split_of(g, 0) != "train")
    rows.write_text(json.dumps({"question": "2+2?", "answer": "4", "group": group}) + "\n")
    result = autodidact("run", "--task", "jsonl", "--path", str(rows), "--root", str(tmp_path))
    assert_one_line_exit_2(result, "no train items")
