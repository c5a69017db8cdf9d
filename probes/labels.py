"""Labels for probes: 1 = the model's answer was wrong (hallucinated), 0 = right.

Every label keeps the answer's finish reason. An answer cut off at the token budget
(`finish_reason == "length"`) says as much about the budget as about the model: a probe
fitted on such labels learns to predict truncation (measured here: 0.83 AUROC on 2-digit
addition cut at 12 tokens, 0.55 with room to finish). Truncated answers are therefore
counted, reported, and left out of fitting and evaluation unless asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engines.base import Generation
from tasks.base import Item, Task

TRUNCATED = "length"


class LabelError(ValueError):
    """A label source cannot be read; the message names the file, line and fix."""


@dataclass(frozen=True)
class Label:
    item_id: str
    wrong: int  # 1 = hallucinated / incorrect, 0 = correct
    finish_reason: str  # "stop", "length", or "unknown" (labels from a file without it)
    answer: str = ""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == TRUNCATED


def verify_answer(task: Task, item: Item, answer: str, finish_reason: str) -> Label:
    """The label of one answer to one item: the item's own `label` when its task file gives
    one (a JSONL row's `label` column: 1 = this model's answer is known wrong), else the
    task's verifier's verdict."""
    given = item.meta.get("label")
    wrong = int(given) if given is not None else int(not task.verify(answer, item))
    return Label(item.id, wrong, finish_reason, answer)


def label_generations(
    task: Task, items: Sequence[Item], generations: Sequence[Generation]
) -> list[Label]:
    """Label each item's first (greedy) sample with the task's verifier."""
    if len(items) != len(generations):
        raise ValueError(f"{len(generations)} generations for {len(items)} items")
    return [
        verify_answer(task, item, generation.samples[0].text, generation.samples[0].finish_reason)
        for item, generation in zip(items, generations, strict=True)
    ]


def relabel(task: Task, labels: Sequence[Label]) -> list[Label]:
    """The same answers (and finish reasons) judged again by the task's current verifier,
    e.g. labels cached before the verifier was fixed."""
    by_id = {item.id: item for item in task.items}
    missing = [label.item_id for label in labels if label.item_id not in by_id]
    if missing:
        raise LabelError(f"task {task.name!r} has no items {missing[:3]}: relabel with its task")
    return [
        verify_answer(task, by_id[label.item_id], label.answer, label.finish_reason)
        for label in labels
    ]


@dataclass(frozen=True)
class LabelSummary:
    n: int
    wrong: int
    truncated: int  # answers cut at the token budget
    truncated_wrong: int  # of those, judged wrong by the verifier
    included: int  # labels used for fitting / evaluation

    def describe(self) -> str:
        """
        >>> LabelSummary(n=10, wrong=6, truncated=2, truncated_wrong=2, included=8).describe()
        '10 labels, 6 wrong (60%); 2 truncated (2 of them wrong), excluded; 8 used'
        """
        share = self.wrong / self.n if self.n else 0.0
        text = f"{self.n} labels, {self.wrong} wrong ({share:.0%})"
        if self.truncated:
            fate = "excluded" if self.included < self.n else "included"
            text += f"; {self.truncated} truncated ({self.truncated_wrong} of them wrong), {fate}"
        return f"{text}; {self.included} used"


def usable(labels: Sequence[Label], *, include_truncated: bool = False) -> NDArray[np.bool_]:
    """(N,) mask of labels fit for fitting / evaluation."""
    return np.array([include_truncated or not label.truncated for label in labels], dtype=bool)


def summarize_labels(labels: Sequence[Label], *, include_truncated: bool = False) -> LabelSummary:
    return LabelSummary(
        n=len(labels),
        wrong=sum(label.wrong for label in labels),
        truncated=sum(label.truncated for label in labels),
        truncated_wrong=sum(label.truncated and label.wrong for label in labels),
        included=int(usable(labels, include_truncated=include_truncated).sum()),
    )


def label_array(labels: Sequence[Label]) -> NDArray[np.int64]:
    """(N,) 0/1 array, 1 = wrong."""
    return np.array([label.wrong for label in labels], dtype=np.int64)
