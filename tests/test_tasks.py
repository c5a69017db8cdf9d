"""Task suites: verifiers, deterministic grouped splits, JSONL loading."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import tasks.jsonl
import tasks.verifiers
from tasks import get_task
from tasks.base import SPLITS, TaskError
from tasks.jsonl import load_jsonl_task
from tasks.verifiers import alias_match, numeric_match


@pytest.mark.parametrize("module", [tasks.verifiers, tasks.jsonl, tasks.base])
def test_doctests(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("answer", "refs", "expected"),
    [
        ("To solve this, 23 + 45 = 68.", ["68"], True),
        ("23 + 45 = 67. So 68 is wrong", ["68"], False),
        ("The answer is -12", ["-12"], True),
        ("", ["5"], False),
    ],
)
def test_numeric_match(answer: str, refs: list[str], expected: bool) -> None:
    assert numeric_match(answer, refs) is expected


def test_alias_match_ignores_accents_and_case() -> None:
    assert alias_match("la capitale est BOGOTA", ["Bogotá"])
    assert not alias_match("Cali", ["Bogotá"])


@pytest.mark.parametrize("name", ["arithmetic", "capitals"])
def test_splits_are_deterministic_disjoint_and_grouped(name: str) -> None:
    task = get_task(name)
    splits = {split: task.split(split) for split in SPLITS}
    assert splits == {split: get_task(name).split(split) for split in SPLITS}
    assert sum(len(items) for items in splits.values()) == len(task.items)
    groups = {split: {item.group for item in items} for split, items in splits.items()}
    assert not groups["train"] & groups["dev"]
    assert not groups["train"] & groups["test"]
    assert not groups["dev"] & groups["test"]
    assert all(len(items) > 0 for items in splits.values())


def test_a_different_seed_gives_different_splits() -> None:
    task = get_task("capitals")
    assert task.split("test", seed=0) != task.split("test", seed=1)


def test_arithmetic_is_seeded_and_correct() -> None:
    task = get_task("arithmetic", n=50, digits=2, operators="+-*", seed=3)
    assert task.items == get_task("arithmetic", n=50, digits=2, operators="+-*", seed=3).items
    for item in task.items:
        a, op, b = item.prompt.removeprefix("What is ").removesuffix("?").split()
        assert int(item.answers[0]) == eval(f"{a}{op}{b}")
    assert len({item.prompt for item in task.items}) == 50


def test_arithmetic_commutative_pairs_share_a_group() -> None:
    task = get_task("arithmetic", n=100, digits=1)
    by_group: dict[str, set[str]] = {}
    for item in task.items:
        by_group.setdefault(item.group, set()).add(item.prompt)
    assert any(len(prompts) == 2 for prompts in by_group.values())


def test_capitals_has_about_250_items() -> None:
    task = get_task("capitals")
    assert 200 <= len(task.items) <= 260
    france = next(item for item in task.items if item.group == "France")
    assert task.verify("The capital of France is Paris.", france)


def test_jsonl_keeps_clean_rows_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        json.dumps({"question": "2+2?", "answer": "4", "group": "g1"}),
        "{broken",
        json.dumps({"question": "Capital of Peru?", "answers": ["Lima"]}),
        json.dumps({"answer": "no question"}),
        "",
        json.dumps({"question": "no answer"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    task, problems = load_jsonl_task(path)
    assert [item.prompt for item in task.items] == ["2+2?", "Capital of Peru?"]
    assert [p.line for p in problems] == [2, 4, 6]
    assert "question" in str(problems[1])


def test_jsonl_with_no_clean_row_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{nope\n")
    with pytest.raises(TaskError, match="no usable row"):
        load_jsonl_task(path)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(TaskError, match="capitals"):
        get_task("nope")
