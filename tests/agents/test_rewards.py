"""Rewards: verdicts as select and evaluate read them, and the two reward functions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agents.rewards import DEFAULT_ABSTENTIONS, REWARDS, Verdict, judge, truthfulness, verifier
from engines.base import Sample
from tasks.base import Item, Task

ITEM = Item("fr", "What is the capital of France?", ("Paris",), "fr")


def exact(answer: str, references: Sequence[str]) -> bool:
    return answer.strip().rstrip(".") in references


TASK = Task("toy", (ITEM,), exact, "toy-exact")


def sample(text: str, finish: str = "stop") -> Sample:
    return Sample(text, [1, 2], [-0.1, -0.2], [0.5, 0.5], finish)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "finish", "expected"),
    [
        ("Paris.", "stop", 1.0),
        ("I don't know.", "stop", 0.0),
        ("I'm not sure.", "stop", 0.0),
        ("I'm not sure, but it is Lyon.", "stop", -1.0),  # a guess after the refusal
        ("Lyon.", "stop", -1.0),
        ("Paris", "length", -1.0),  # cut off at the budget: never correct (as select labels)
    ],
)
def test_truthfulness_reward(text: str, finish: str, expected: float) -> None:
    verdict = judge(TASK, ITEM, sample(text, finish), DEFAULT_ABSTENTIONS)
    assert truthfulness(verdict) == expected
    assert verifier(verdict) == (1.0 if expected == 1.0 else 0.0)


def test_abstentions_are_the_policys() -> None:
    from agents.refine import RefinePolicy

    assert RefinePolicy().abstentions == DEFAULT_ABSTENTIONS
    custom = judge(TASK, ITEM, sample("Pass."), ("Pass",))
    assert custom == Verdict(correct=False, abstained=True)
    assert judge(TASK, ITEM, sample("Pass."), DEFAULT_ABSTENTIONS).abstained is False


def test_registry() -> None:
    assert {"verifier": verifier, "truthfulness": truthfulness} == REWARDS
