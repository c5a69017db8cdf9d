"""Task suites: verifiers, deterministic grouped splits, JSONL loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import get_task, with_verifier
from tasks.base import SPLITS, TaskError
from tasks.jsonl import load_jsonl_task
from tasks.verifiers import alias_key, alias_match, final_number, number_key, numeric_match


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


def test_jsonl_reports_a_repeated_id_and_keeps_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    rows = [
        {"question": "2+2?", "answer": "4", "id": "a"},
        {"question": "3+3?", "answer": "6", "id": "b"},
        {"question": "5+5?", "answer": "10", "id": "a"},
        {"question": "7+7?", "answer": "14"},  # id line-4
        {"question": "8+8?", "answer": "16", "id": "line-4"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken\n")
    task, problems = load_jsonl_task(path)
    assert [item.id for item in task.items] == ["a", "b", "line-4"]
    assert [item.prompt for item in task.items] == ["2+2?", "3+3?", "7+7?"]
    assert [p.line for p in problems] == [3, 5, 6]
    assert str(problems[0]) == "line 3: id 'a' repeats line 1's (the first is kept)"


def test_jsonl_with_no_clean_row_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{nope\n")
    with pytest.raises(TaskError, match="no usable row"):
        load_jsonl_task(path)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(TaskError, match="capitals"):
        get_task("nope")


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_with_only_numeric_answers_is_judged_by_numeric(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "sums.jsonl",
        [
            {"question": "What is 45 - 13?", "answer": "32"},
            {"question": "Half of 3?", "answers": ["1.5", "1.50"]},
            {"question": "What is 1000 + 204?", "answer": "1,204"},
        ],
    )
    task, _ = load_jsonl_task(path)
    assert task.verifier_name == "numeric"
    item = task.items[0]
    assert task.verify("45 - 13 = 32", item)
    assert not task.verify("45 - 13 = 31, not 32", item)  # alias would accept the "32"
    assert alias_match("45 - 13 = 31, not 32", item.answers)
    assert get_task("jsonl", path=str(path)).verifier_name == "numeric"


def test_jsonl_with_a_non_numeric_answer_stays_alias(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "mixed.jsonl",
        [
            {"question": "What is 45 - 13?", "answer": "32"},
            {"question": "Capital of Peru?", "answers": ["Lima", "Ciudad de los Reyes"]},
        ],
    )
    task, _ = load_jsonl_task(path)
    assert task.verifier_name == "alias"


def test_an_explicit_verifier_overrides_the_choice(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "sums.jsonl", [{"question": "What is 45 - 13?", "answer": "32"}])
    task, _ = load_jsonl_task(path, verifier="alias")
    assert task.verifier_name == "alias"
    assert task.verify("45 - 13 = 31, not 32", task.items[0])
    assert get_task("jsonl", path=str(path), verifier="exact").verifier_name == "exact"
    renamed = with_verifier(get_task("capitals"), "exact")
    assert (renamed.verifier_name, renamed.verifier.__name__) == ("exact", "exact_match")
    with pytest.raises(TaskError, match="choose one of exact, alias, numeric"):
        load_jsonl_task(path, verifier="number")
    with pytest.raises(TaskError, match="choose one of exact, alias, numeric"):
        with_verifier(renamed, "number")


def test_answer_keys_cluster_free_form_answers_by_the_references_they_name() -> None:
    task = get_task("capitals")
    peru = next(item for item in task.items if item.group == "Peru")
    samples = ["The capital of Peru is Lima.", "Lima.", "It's Lima, I believe", "Cusco"]
    keys = [task.answer_key(sample) for sample in samples]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert alias_key("Cusco", peru.answers) == ("cusco",)
    assert alias_key("Paris or Lima?", ["Lima", "Paris"]) == ("lima", "paris")


def test_numeric_answer_keys_are_the_final_number_as_before() -> None:
    def old_key(text: str) -> str:  # agents/refine.py's numeric vote key before tasks had keys
        value = final_number(text)
        return "" if value is None else f"{value:g}"

    task = get_task("arithmetic", n=5)
    texts = ["12 + 5 = 17.", "The sum is 17", "17.0", "1,204", "= 3 so", "no idea", "-2", ""]
    for text in texts:
        assert task.answer_key(text) == number_key(text) == (old_key(text),)


def test_capitals_never_count_a_reference_the_answer_repeats_from_the_question() -> None:
    """The 10 countries whose name contains their capital (Guinea-Bissau, Luxembourg, São
    Tomé and Príncipe, ...) passed with any answer before the echo was masked."""
    task = get_task("capitals")
    echoing = [item for item in task.items if alias_match(item.prompt, item.answers)]
    assert len(echoing) == 10
    for item in task.items:
        country, capital = item.group, item.answers[0]
        for wrong in (
            f"The capital of {country} is Xyzzy.",
            f"{country}'s capital is Xyzzy.",
            f"Xyzzy is the capital of {country}.",
        ):
            assert not task.verify(wrong, item), (wrong, capital)
        for right in (
            f"{capital}.",
            f"The capital of {country} is {capital}.",
            f"{capital} is the capital of {country}.",
        ):
            assert task.verify(right, item), (right, capital)


def test_the_echo_mask_is_for_alias_verifiers_only() -> None:
    arithmetic = get_task("arithmetic", n=5)
    item = arithmetic.items[0]
    assert arithmetic.verify(f"{item.prompt} = {item.answers[0]}", item)
