"""What a task is: items with references, a verifier, deterministic grouped splits."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from tasks.verifiers import ANSWER_KEYS, ECHO_MASKED, AnswerKey, mask_echoes, text_key

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
Verifier = Callable[[str, Sequence[str]], bool]


class TaskError(ValueError):
    """A task cannot be built or loaded; the message names the cause and the fix."""


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    answers: tuple[str, ...]  # every accepted reference answer
    group: str  # items sharing a group always land in the same split
    image: object | None = None  # a PIL image for vision tasks
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    items: tuple[Item, ...]
    verifier: Verifier
    verifier_name: str
    description: str = ""
    max_new_tokens: int = 48  # enough room for the default model to finish an answer
    # Labels a prompt the model wrote itself (self-instruct), or None when it cannot.
    oracle: Callable[[str], Item | None] | None = None

    def verify(self, answer: str, item: Item) -> bool:
        """The verifier's verdict on one answer; a verifier that reads references anywhere
        in the answer (`ECHO_MASKED`) does not count one named only in the words the answer
        repeats from the question (`mask_echoes`)."""
        if self.verifier_name in ECHO_MASKED:
            answer = mask_echoes(answer, item.prompt, item.answers)
        return self.verifier(answer, item.answers)

    def answer_key(self, answer: str) -> AnswerKey:
        """What two answers must share to count as one vote (self-consistency): the
        verifier's reading of them (`ANSWER_KEYS`), else their normalized text. Alias keys
        read which of the *task's* references an answer names, never only the item's: a
        self-consistency vote must not see the item's right answer, so one key serves
        every item of the task."""
        return ANSWER_KEYS.get(self.verifier_name, text_key)(answer, self.references)

    @cached_property
    def references(self) -> tuple[str, ...]:
        """Every reference answer of the task, once each, sorted."""
        return tuple(sorted({answer for item in self.items for answer in item.answers}))

    def split(
        self, name: Split, *, seed: int = 0, fractions: Sequence[float] = (0.6, 0.2, 0.2)
    ) -> list[Item]:
        """Items of one split: by a seeded hash of the group, so a group never spans splits."""
        return [item for item in self.items if split_of(item.group, seed, fractions) == name]


def split_of(group: str, seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> Split:
    """Deterministic split of a group id.

    >>> split_of("France", 0) == split_of("France", 0)
    True
    >>> split_of("g", 0, (1.0, 0.0, 0.0))
    'train'
    """
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return split
    return SPLITS[-1]


# A session decides each cycle on dev accuracy and reports test accuracy: below these
# counts one item moves either number by more than 10 points, so nothing can be decided.
MIN_SESSION_SPLITS: dict[Split, int] = {"train": 1, "dev": 10, "test": 10}


def split_sizes(
    groups: Sequence[str], seed: int = 0, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> dict[Split, int]:
    """How many rows (given by their group) land in each split.

    >>> split_sizes(["a", "a", "b"], fractions=(1.0, 0.0, 0.0))
    {'train': 3, 'dev': 0, 'test': 0}
    """
    sizes = dict.fromkeys(SPLITS, 0)
    for group in groups:
        sizes[split_of(group, seed, fractions)] += 1
    return sizes


def split_sizes_problem(
    name: str,
    groups: Sequence[str],
    *,
    seed: int = 0,
    minimum: Mapping[Split, int] = MIN_SESSION_SPLITS,
    why: str = "dev decides each cycle, test reports the result",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    names: Mapping[Split, str] | None = None,
    fix: str = "add about {n} rows in new groups",
) -> str | None:
    """One line saying which split of `name`'s rows (by group) is below `minimum` and how
    many rows to add (`fix`, formatted with `n`), or None when every split is large enough.

    >>> split_sizes_problem("t", [f"g{i}" for i in range(100)]) is None
    True
    >>> print(split_sizes_problem("t", ["g1", "g2"]))
    task 't' splits into train 1, dev 1, test 0 items (seed 0): need dev >= 10 and test >= 10 (dev decides each cycle, test reports the result); add about 50 rows in new groups
    """
    sizes = split_sizes(groups, seed, fractions)
    short = {split: n for split, n in minimum.items() if sizes[split] < n}
    if not short:
        return None
    label = names or {}
    shown = ", ".join(f"{label.get(s, s)} {sizes[s]}" for s in SPLITS)
    needs = " and ".join(f"{label.get(s, s)} >= {n}" for s, n in short.items())
    share = dict(zip(SPLITS, fractions, strict=True))
    more = max(math.ceil((n - sizes[s]) / share[s]) if share[s] else 0 for s, n in short.items())
    add = fix.format(n=more) if more else "change the split fractions"
    return f"task {name!r} splits into {shown} items (seed {seed}): need {needs} ({why}); {add}"
