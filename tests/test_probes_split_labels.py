"""Grouped splits and labels (verifier labels, JSONL labels, truncation accounting)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.base import SamplingParams
from probes.labels import (
    Label,
    LabelError,
    label_array,
    label_generations,
    labels_from_jsonl,
    summarize_labels,
    usable,
)
from probes.split import grouped_split
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


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    )
    return path


def test_labels_from_jsonl(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.jsonl",
        [
            {"id": "a", "label": 1, "finish_reason": "stop"},
            {"id": "b", "label": "false"},
            {"id": "c", "label": True, "finish_reason": "length"},
        ],
    )
    labels = labels_from_jsonl(path)
    assert labels == [Label("a", 1, "stop"), Label("b", 0, "unknown"), Label("c", 1, "length")]
    assert label_array(labels).tolist() == [1, 0, 1]
    assert summarize_labels(labels).truncated == 1


def test_labels_from_eval_answers_invert_correct(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "answers.jsonl",
        [{"id": "x", "output": "Paris", "correct": True, "finish_reason": "stop"}],
    )
    (label,) = labels_from_jsonl(path, column="correct", invert=True)
    assert label == Label("x", 0, "stop", "Paris")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "labels.jsonl:2: not JSON"),
        ({"id": "b"}, "labels.jsonl:2: needs fields 'id' and 'label'"),
        ({"id": "b", "label": 0.5}, "labels.jsonl:2: label=0.5 is not 0/1"),
    ],
)
def test_bad_jsonl_rows_name_file_and_line(tmp_path: Path, row: object, message: str) -> None:
    path = _write(tmp_path / "labels.jsonl", [{"id": "a", "label": 1}, row])
    with pytest.raises(LabelError, match=message):
        labels_from_jsonl(path)
