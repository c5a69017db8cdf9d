"""Grouped splits and labels (verifier labels, a JSONL row's own label, truncation accounting)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.base import SamplingParams
from probes.labels import (
    label_generations,
    relabel,
    summarize_labels,
    usable,
    verify_answer,
)
from probes.split import grouped_split
from tasks.jsonl import load_jsonl_task
from tests.probe_fakes import FakeEngine, toy_task


def _groups(n: int = 600, per_group: int = 3) -> list[str]:
    return [f"entity-{i // per_group}" for i in range(n)]


def test_a_group_never_spans_two_splits() -> None:
    groups = _groups()
    split = grouped_split(groups, seed=4)
    seen: dict[str, str] = {}
    for name in ("train", "validation", "test"):
        for row in getattr(split, name):
            assert seen.setdefault(groups[row], name) == name
    assert sorted(np.concatenate([split.train, split.validation, split.test])) == list(
        range(len(groups))
    )


def test_split_is_seeded_deterministic_and_near_its_fractions() -> None:
    groups = _groups(3000, 1)
    first, again = grouped_split(groups, seed=1), grouped_split(groups, seed=1)
    other = grouped_split(groups, seed=2)
    assert all(
        np.array_equal(getattr(first, s), getattr(again, s))
        for s in ("train", "validation", "test")
    )
    assert not np.array_equal(first.test, other.test)
    sizes = first.sizes()
    assert sizes["train"] == pytest.approx(1800, abs=120)
    assert sizes["validation"] == pytest.approx(600, abs=90)
    assert sizes["test"] == pytest.approx(600, abs=90)


def test_an_item_keeps_its_split_when_others_are_dropped() -> None:
    groups = _groups(300, 1)
    full = grouped_split(groups, seed=0)
    test_groups = [groups[i] for i in full.test]
    alone = grouped_split(test_groups, seed=0)
    assert len(alone.test) == len(test_groups) and len(alone.train) == len(alone.validation) == 0


def test_restrict_keeps_only_masked_rows() -> None:
    split = grouped_split(_groups(60, 1), seed=0)
    keep = np.arange(60) % 2 == 0
    restricted = split.restrict(keep)
    for name in ("train", "validation", "test"):
        assert all(row % 2 == 0 for row in getattr(restricted, name))
    assert sum(restricted.sizes().values()) == 30


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        grouped_split(["a"], fractions=(0.5, 0.2, 0.2))


def test_verifier_labels_record_finish_and_count_truncation() -> None:
    task = toy_task(200)
    engine = FakeEngine(truncate_every=10)
    generations = engine.generate([item.prompt for item in task.items], SamplingParams())
    labels = label_generations(task, task.items, generations)
    for item, label in zip(task.items, labels, strict=True):
        assert label.wrong == int(not engine.knows(item.prompt) or engine.truncates(item.prompt))
        assert label.truncated == engine.truncates(item.prompt)
    summary = summarize_labels(labels)
    truncated = sum(engine.truncates(item.prompt) for item in task.items)
    assert 5 < truncated < 40
    assert summary.truncated == truncated and summary.included == 200 - truncated
    assert f"{truncated} truncated" in summary.describe() and "excluded" in summary.describe()
    assert usable(labels).sum() == 200 - truncated
    assert usable(labels, include_truncated=True).all()
    assert summarize_labels(labels, include_truncated=True).included == 200


def test_a_jsonl_rows_label_is_taken_as_given_instead_of_the_verifiers(tmp_path: Path) -> None:
    """The JSONL `label` column (1 = the model's answer is known wrong) is the probe's label
    on that row, in fresh labels and in relabelled cached ones; rows without it are judged
    by the verifier."""
    rows = [
        {"id": "a", "question": "2+2?", "answer": "4", "label": 1},
        {"id": "b", "question": "3+3?", "answer": "6", "label": 0},
        {"id": "c", "question": "4+4?", "answer": "8"},
    ]
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task, problems = load_jsonl_task(path)
    assert problems == []
    answers = {"a": "4", "b": "7", "c": "9"}  # the verifier: a right, b and c wrong
    labels = [verify_answer(task, item, answers[item.id], "stop") for item in task.items]
    assert [label.wrong for label in labels] == [1, 0, 1]
    assert [label.wrong for label in relabel(task, labels)] == [1, 0, 1]
