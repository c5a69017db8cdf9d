"""Refine (inference refinement): self-consistency, probe-gated abstention, best-of-N and
`risk_adaptive`, HALP's three uses of a pre-generation risk in one policy.

Routing rules and threshold choice are pure functions; `refine_answers` runs them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from agents.config import StageConfig
from engines.base import Engine, Generation, Sample
from probes.calibration import Thresholds
from tasks.verifiers import text_key


class RefinePolicy(StageConfig):
    """Refine: self-consistency, probe-gated abstention, best-of-N, risk-adaptive routing."""

    k: int = Field(default=5, ge=2, description="Samples for self-consistency and best-of-N.")
    temperature: float = Field(
        default=0.7, gt=0.0, le=2.0, description="Sampling temperature for the k samples."
    )
    low_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Risk at or below which risk_adaptive answers greedily (null: chosen on "
        "the probe's validation split for target_precision).",
    )
    high_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Risk above which the answer abstains or goes to fallback_model (null: "
        "chosen on the probe's validation split).",
    )
    target_precision: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Precision of answered items the thresholds are chosen for.",
    )
    fallback_model: str | None = Field(
        default=None,
        description="Chat model ('provider:model') that answers high-risk prompts in "
        "risk_adaptive; null: abstain instead.",
    )

    @model_validator(mode="after")
    def _check(self) -> RefinePolicy:
        low, high = self.low_threshold, self.high_threshold
        if low is not None and high is not None and low >= high:
            raise ValueError(
                f"refine.low_threshold ({low}) must be below refine.high_threshold ({high}): "
                "swap them or set both to null to choose them on dev"
            )
        if self.fallback_model is not None and ":" not in self.fallback_model:
            raise ValueError(
                f"refine.fallback_model {self.fallback_model!r} is not 'provider:model': "
                "use e.g. 'openai:gpt-4o-mini', or null to abstain"
            )
        return self


ABSTAIN_TEXT = "I don't know."
Strategy = Literal["none", "self_consistency", "abstain", "best_of_n", "risk_adaptive"]
Route = Literal["greedy", "self_consistency", "best_of_n", "abstain", "fallback"]
STRATEGIES: tuple[Strategy, ...] = (
    "none",
    "self_consistency",
    "abstain",
    "best_of_n",
    "risk_adaptive",
)


@dataclass(frozen=True)
class Refined:
    text: str
    route: Route
    risk: float | None
    finish_reason: str = "stop"

    @property
    def abstained(self) -> bool:
        return self.route == "abstain"


VoteKey = Callable[[str], Hashable]


def majority(samples: Sequence[Sample], key: VoteKey = text_key) -> Sample:
    """The first sample of the most common answer (finished samples only, when any); two
    answers are one vote when their `key` is equal (the task's: `Task.answer_key`).

    >>> from tasks.verifiers import alias_key, number_key
    >>> s = lambda t: Sample(t, [], [], [], "stop")
    >>> majority([s("7"), s("8"), s("it is 8")], number_key).text
    '8'
    >>> lima = lambda text: alias_key(text, ["Lima"])
    >>> majority([s("Cusco."), s("Cusco."), s("Lima."), s("It is Lima"), s("Lima!")], lima).text
    'Lima.'
    """
    finished = [s for s in samples if s.finish_reason == "stop"] or list(samples)
    votes = Counter(key(s.text) for s in finished)
    winner, _ = votes.most_common(1)[0]
    return next(s for s in finished if key(s.text) == winner)


def best_of_n(samples: Sequence[Sample]) -> Sample:
    """The sample the model is most confident in (highest mean token logprob). The probe's
    risk is per prompt (read before decoding), so it ranks prompts, not samples."""
    return max(samples, key=lambda s: (s.finish_reason == "stop", s.mean_logprob))


def route_for(
    strategy: Strategy, risk: float | None, thresholds: Thresholds, has_fallback: bool
) -> Route:
    """Which path a prompt takes.

    >>> t = Thresholds(low=0.3, high=0.7)
    >>> [route_for("risk_adaptive", r, t, False) for r in (0.1, 0.5, 0.9)]
    ['greedy', 'self_consistency', 'abstain']
    >>> route_for("risk_adaptive", 0.9, t, True)
    'fallback'
    >>> route_for("abstain", None, t, False)
    'greedy'
    """
    if strategy in ("none",):
        return "greedy"
    if strategy == "self_consistency":
        return "self_consistency"
    if strategy == "best_of_n":
        return "best_of_n"
    if risk is None:
        return "greedy"  # no probe: nothing to gate on
    if strategy == "abstain":
        return "abstain" if risk > thresholds.high else "greedy"
    if risk <= thresholds.low:
        return "greedy"
    if risk <= thresholds.high:
        return "self_consistency"
    return "fallback" if has_fallback else "abstain"


Fallback = Callable[[str], str]


def refine_answers(
    engine: Engine,
    prompts: Sequence[str],
    *,
    strategy: Strategy,
    thresholds: Thresholds,
    k: int,
    temperature: float,
    max_new_tokens: int,
    key: VoteKey = text_key,
    seed: int = 0,
    fallback: Fallback | None = None,
    greedy: Sequence[Generation] | None = None,
) -> list[Refined]:
    """Answer every prompt along its route. `key` reads answers for the self-consistency
    vote (the task's `answer_key`; default: normalized text). Greedy generations (with
    their risk) may be passed in to avoid decoding twice."""
    greedy = (
        list(greedy)
        if greedy is not None
        else engine.generate(prompts, max_new_tokens=max_new_tokens)
    )
    routes = [route_for(strategy, g.risk, thresholds, fallback is not None) for g in greedy]
    sampled_index = [i for i, r in enumerate(routes) if r in ("self_consistency", "best_of_n")]
    sampled = (
        engine.generate(
            [prompts[i] for i in sampled_index],
            n=k,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        if sampled_index
        else []
    )
    by_index = dict(zip(sampled_index, sampled, strict=True))
    answers = []
    for i, (route, generation) in enumerate(zip(routes, greedy, strict=True)):
        answers.append(_answer(route, generation, by_index.get(i), key, fallback, prompts[i]))
    return answers


def _answer(
    route: Route,
    greedy: Generation,
    sampled: Generation | None,
    key: VoteKey,
    fallback: Fallback | None,
    prompt: str,
) -> Refined:
    if route == "abstain":
        return Refined(ABSTAIN_TEXT, route, greedy.risk)
    if route == "fallback" and fallback is not None:
        return Refined(fallback(prompt), route, greedy.risk)
    if sampled is not None:
        chosen = (
            majority(sampled.samples, key)
            if route == "self_consistency"
            else best_of_n(sampled.samples)
        )
        return Refined(chosen.text, route, greedy.risk, chosen.finish_reason)
    sample = greedy.samples[0]
    return Refined(sample.text, "greedy", greedy.risk, sample.finish_reason)
