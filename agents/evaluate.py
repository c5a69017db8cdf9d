"""Evaluate: greedy answers on held-out items, checked by the task's verifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from engines.base import Engine, Generation, ProgressFn
from tasks.base import Item, Task


@dataclass(frozen=True)
class ItemResult:
    id: str
    prompt: str
    answers: tuple[str, ...]
    output: str
    correct: bool
    finish_reason: str
    abstained: bool = False
    risk: float | None = None
    mean_logprob: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class EvalSummary:
    n: int
    accuracy: float  # correct / n (an abstention counts as not correct)
    hallucination_rate: float  # answered and wrong / n
    abstention_rate: float
    truncated: int  # answers cut off at max_new_tokens

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> EvalSummary:
        n = max(len(results), 1)
        return cls(
            n=len(results),
            accuracy=sum(r.correct for r in results) / n,
            hallucination_rate=sum(not r.correct and not r.abstained for r in results) / n,
            abstention_rate=sum(r.abstained for r in results) / n,
            truncated=sum(r.finish_reason == "length" for r in results),
        )


def score_generation(task: Task, item: Item, generation: Generation) -> ItemResult:
    sample = generation.samples[0]
    return ItemResult(
        id=item.id,
        prompt=item.prompt,
        answers=item.answers,
        output=sample.text,
        correct=task.verify(sample.text, item),
        finish_reason=sample.finish_reason,
        risk=generation.risk,
        mean_logprob=sample.mean_logprob,
    )


def greedy_eval(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int | None = None,
    on_progress: ProgressFn | None = None,
) -> list[ItemResult]:
    """Greedy answers with room to finish (the task's token budget by default)."""
    generations = engine.generate(
        [item.prompt for item in items],
        temperature=0.0,
        max_new_tokens=max_new_tokens or task.max_new_tokens,
        on_progress=on_progress,
    )
    return [score_generation(task, item, g) for item, g in zip(items, generations, strict=True)]
