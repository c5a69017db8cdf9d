"""Train / validation / test split grouped by item group (entity, image, source).

A group's split comes from a seeded hash of its id (`tasks.base.split_of`, the tasks' own
split with "dev" as validation), so it is deterministic, a group never spans two splits,
and an item keeps its split when other items are added or removed: a probe's test items
can be re-collected alone and are still its test items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tasks.base import split_of

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
Indices = NDArray[np.int64]


@dataclass(frozen=True)
class SplitIndices:
    """Row indices of each split, ascending."""

    train: Indices
    validation: Indices
    test: Indices

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }

    def restrict(self, keep: NDArray[np.bool_]) -> SplitIndices:
        """Only the rows where `keep` (N,) is true (e.g. labels that are not truncated)."""
        return SplitIndices(
            *(part[keep[part]] for part in (self.train, self.validation, self.test))
        )


def grouped_split(
    groups: Sequence[str], *, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> SplitIndices:
    """Split rows by their group.

    >>> split = grouped_split(["a", "a", "b", "c"], fractions=(1.0, 0.0, 0.0))
    >>> split.train.tolist(), split.test.tolist()
    ([0, 1, 2, 3], [])
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    names = {group: split_of(group, seed, fractions) for group in set(groups)}
    assigned = np.array([names[group] for group in groups], dtype=object)
    return SplitIndices(
        *(np.flatnonzero(assigned == name).astype(np.int64) for name in ("train", "dev", "test"))
    )
