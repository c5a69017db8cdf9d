"""Refine (inference refinement): self-consistency, probe-gated abstention, best-of-N and
`risk_adaptive`, HALP's three uses of a pre-generation risk in one policy.

Routing rules and threshold choice are pure functions; `refine_answers` runs them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from engines.base import Engine, Generation, Sample
from tasks.verifiers import final_number, normalize

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
class Thresholds:
    low: float = 0.3  # risk at or below: answer greedily
    high: float = 0.7  # risk above: abstain or route to the fallback model


@dataclass(frozen=True)
class Refined:
    text: str
    route: Route
    risk: float | None
    finish_reason: str = "stop"

    @property
    def abstained(self) -> bool:
        return self.route == "abstain"


def answer_key(text: str, numeric: bool) -> str:
    """What two answers must share to count as the same vote.

    >>> answer_key("12 + 5 = 17.", numeric=True) == answer_key("The sum is 17", numeric=True)
    True
    >>> answer_key("Paris.", numeric=False)
    'paris'
    """
    if numeric:
        value = final_number(text)
        return "" if value is None else f"{value:g}"
    return normalize(text)


def majority(samples: Sequence[Sample], numeric: bool) -> Sample:
    """The first sample of the most common answer (finished samples only, when any).

    >>> s = lambda t: Sample(t, [], [], [], "stop")
    >>> majority([s("7"), s("8"), s("it is 8")], numeric=True).text
    '8'
    """
    finished = [s for s in samples if s.finish_reason == "stop"] or list(samples)
    votes = Counter(answer_key(s.text, numeric) for s in finished)
    winner, _ = votes.most_common(1)[0]
    return next(s for s in finished if answer_key(s.text, numeric) == winner)


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


def threshold_for_precision(
    risks: Sequence[float], correct: Sequence[bool], target: float
) -> float:
    """The highest risk cut-off whose answered set (risk <= cut-off) still reaches the
    target precision on dev; the lowest risk when none does.

    >>> threshold_for_precision([0.1, 0.2, 0.8, 0.9], [True, True, False, True], 0.9)
    0.2
    >>> threshold_for_precision([0.1, 0.2], [True, True], 0.9)
    0.2
    """
    ranked = sorted(zip(risks, correct, strict=True))
    best, right = ranked[0][0], 0
    for answered, (risk, ok) in enumerate(ranked, start=1):
        right += ok
        if right / answered >= target:
            best = risk
    return best


def choose_thresholds(
    risks: Sequence[float], correct: Sequence[bool], target_precision: float
) -> Thresholds:
    """low = the cut-off reaching the target precision; high = the cut-off reaching half
    of the distance from the overall accuracy to the target (never below low)."""
    if not risks:
        return Thresholds()
    low = threshold_for_precision(risks, correct, target_precision)
    base = sum(correct) / len(correct)
    high = threshold_for_precision(risks, correct, base + (target_precision - base) / 2)
    return Thresholds(low=low, high=max(high, low))


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
    numeric: bool,
    seed: int = 0,
    fallback: Fallback | None = None,
    greedy: Sequence[Generation] | None = None,
) -> list[Refined]:
    """Answer every prompt along its route. Greedy generations (with their risk) may be
    passed in to avoid decoding twice."""
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
        answers.append(_answer(route, generation, by_index.get(i), numeric, fallback, prompts[i]))
    return answers


def _answer(
    route: Route,
    greedy: Generation,
    sampled: Generation | None,
    numeric: bool,
    fallback: Fallback | None,
    prompt: str,
) -> Refined:
    if route == "abstain":
        return Refined(ABSTAIN_TEXT, route, greedy.risk)
    if route == "fallback" and fallback is not None:
        return Refined(fallback(prompt), route, greedy.risk)
    if sampled is not None:
        chosen = (
            majority(sampled.samples, numeric)
            if route == "self_consistency"
            else best_of_n(sampled.samples)
        )
        return Refined(chosen.text, route, greedy.risk, chosen.finish_reason)
    sample = greedy.samples[0]
    return Refined(sample.text, "greedy", greedy.risk, sample.finish_reason)
