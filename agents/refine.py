"""Refine (inference refinement): self-consistency, probe-gated abstention, best-of-N and
`risk_adaptive`, HALP's three uses of a pre-generation risk in one policy.

Routing rules and threshold choice are pure functions; `refine_answers` runs them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from agents.config import StageConfig
from engines.base import Engine, Generation, RiskFn, Sample, SamplingParams
from probes.calibration import Thresholds
from tasks.verifiers import normalize, text_key

ABSTAIN_TEXT = "I don't know."  # the default of `RefinePolicy.abstention_text`
REFUSAL_PHRASES: tuple[str, ...] = (
    "I don't know",
    "I do not know",
    "I'm not sure",
    "I am not sure",
    "I cannot answer",
    "I can't answer",
)
# After a refusal's opening, a guess still makes the answer an answer.
_GUESS = re.compile(r"\b(but|maybe|perhaps|probably|possibly|i think|i believe|i guess)\b")


def is_abstention(text: str, openings: Sequence[str]) -> bool:
    """The answer opens with one of `openings` (normalized) and ventures no guess after it.

    >>> said = ("I don't know.", *REFUSAL_PHRASES)
    >>> [is_abstention(t, said) for t in ("I don't know.", "i do not know the capital of Chad")]
    [True, True]
    >>> [is_abstention(t, said) for t in ("I'm not sure, but it is Lyon.", "Paris. I don't know")]
    [False, False]
    >>> is_abstention("", said)
    False
    """
    words = normalize(text)
    for opening in map(normalize, openings):
        if opening and (words == opening or words.startswith(opening + " ")):
            return not _GUESS.search(words[len(opening) :])
    return False


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
    gate_rule: Literal["target_precision", "accuracy_floor"] = Field(
        default="target_precision",
        description="How the session chooses the abstain cut-off it ships with its best "
        "version (model.json: what `answer`/`eval`/`serve --session` gate with): "
        "target_precision, the thresholds chosen on the probe's validation split; "
        "accuracy_floor, on dev, the fewest answers whose dev accuracy keeps "
        "monitor.accuracy_floor x the initial model's (least hallucination at the accuracy "
        "the floor allows; the honesty preset's).",
    )
    fallback_model: str | None = Field(
        default=None,
        description="Chat model ('provider:model') that answers high-risk prompts in "
        "risk_adaptive; null: abstain instead.",
    )
    abstention_text: str = Field(
        default=ABSTAIN_TEXT,
        min_length=1,
        description="What an abstention says: the abstain routes answer it, select's "
        "learn_abstention teaches it, evaluate counts it as an abstention.",
    )
    refusal_phrases: tuple[str, ...] = Field(
        default=REFUSAL_PHRASES,
        description="Openings that make an answer an abstention when evaluating (besides "
        "abstention_text), unless a guess follows ('I'm not sure, but ...') or it is correct.",
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

    @property
    def abstentions(self) -> tuple[str, ...]:
        """Every opening that makes an answer an abstention (see `is_abstention`)."""
        return (self.abstention_text, *self.refusal_phrases)


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
    abstention: str = ABSTAIN_TEXT,
    risk_fn: RiskFn | None = None,
) -> list[Refined]:
    """Answer every prompt along its route. `key` reads answers for the self-consistency
    vote (the task's `answer_key`; default: normalized text). Greedy generations (with
    their risk) may be passed in to avoid decoding twice; else they are decoded here, their
    risk from the probe `risk_fn`. An abstaining route answers `abstention` (the policy's
    `abstention_text`)."""
    greedy = (
        list(greedy)
        if greedy is not None
        else engine.generate(
            prompts, SamplingParams(max_new_tokens=max_new_tokens), risk_fn=risk_fn
        )
    )
    routes = [route_for(strategy, g.risk, thresholds, fallback is not None) for g in greedy]
    sampled_index = [i for i, r in enumerate(routes) if r in ("self_consistency", "best_of_n")]
    sampled = (
        engine.generate(
            [prompts[i] for i in sampled_index],
            SamplingParams(n=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
        )
        if sampled_index
        else []
    )
    by_index = dict(zip(sampled_index, sampled, strict=True))
    answers = []
    for i, (route, generation) in enumerate(zip(routes, greedy, strict=True)):
        sampled_i = by_index.get(i)
        answers.append(_answer(route, generation, sampled_i, key, fallback, prompts[i], abstention))
    return answers


def _answer(
    route: Route,
    greedy: Generation,
    sampled: Generation | None,
    key: VoteKey,
    fallback: Fallback | None,
    prompt: str,
    abstention: str,
) -> Refined:
    if route == "abstain":
        return Refined(abstention, route, greedy.risk)
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
