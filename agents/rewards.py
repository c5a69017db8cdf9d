"""Rewards for GRPO: pure functions of a sample's verdict, named in `REWARDS`.

A verdict is what the session already knows about a sample: whether the task's verifier
accepts it (a sample cut off at the token budget never counts as correct, as select labels
it) and whether it abstains (as evaluate counts one: not correct and opening with the
abstention text or a refusal phrase, no guess after it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agents.refine import ABSTAIN_TEXT, REFUSAL_PHRASES, is_abstention
from engines.base import Sample
from tasks.base import Item, Task

RewardName = Literal["verifier", "truthfulness"]
# `RefinePolicy().abstentions`: what evaluate counts as an abstention by default
DEFAULT_ABSTENTIONS: tuple[str, ...] = (ABSTAIN_TEXT, *REFUSAL_PHRASES)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    abstained: bool  # never True when correct


def judge(task: Task, item: Item, sample: Sample, abstentions: Sequence[str]) -> Verdict:
    """One sample's verdict: correct when it finished and the verifier accepts it; an
    abstention when it is not correct and `is_abstention` reads one (`abstentions`: the
    policy's `refine.abstentions`)."""
    correct = sample.finish_reason == "stop" and task.verify(sample.text, item)
    return Verdict(correct, not correct and is_abstention(sample.text, abstentions))


def verifier(verdict: Verdict) -> float:
    """The task's verifier: 1 right, 0 otherwise (an abstention is as wrong as a guess).

    >>> [verifier(Verdict(*v)) for v in ((True, False), (False, True), (False, False))]
    [1.0, 0.0, 0.0]
    """
    return 1.0 if verdict.correct else 0.0


def truthfulness(verdict: Verdict) -> float:
    """+1 right, 0 abstention, -1 wrong: saying "I don't know" beats a wrong guess.

    >>> [truthfulness(Verdict(*v)) for v in ((True, False), (False, True), (False, False))]
    [1.0, 0.0, -1.0]
    """
    if verdict.correct:
        return 1.0
    return 0.0 if verdict.abstained else -1.0


Reward = Callable[[Verdict], float]
REWARDS: dict[RewardName, Reward] = {"verifier": verifier, "truthfulness": truthfulness}
