"""The served model with its gate: one batch of questions in, each answer with its risk
(read by the probe from the answer's own prefill) and its route out.

A request either takes the gate (`strategy` other than none: greedy decoding, the route
chosen by the risk, an abstention answering the policy's abstention text) or, with the
strategy none, samples as the request asks (temperature, top_p, seed). Requests are
grouped by how they decode, so one `engine.generate` call answers a group."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agents.refine import Refined, RefinePolicy, Route, Strategy, refine_answers
from engines.base import Engine, RiskFn, SamplingParams
from probes.calibration import Thresholds

REFINE = RefinePolicy()  # the refine settings' defaults, for a model served without a session
Outcome = Literal["answered", "abstained", "refined"]
OUTCOMES: dict[Route, Outcome] = {
    "greedy": "answered",
    "abstain": "abstained",
    "self_consistency": "refined",
    "best_of_n": "refined",
    "fallback": "refined",
}


@dataclass(frozen=True)
class Question:
    """One request's question and how it asks to be decoded (temperature 0: greedy)."""

    prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # the answer must be a JSON document of this schema

    def decoding(self, gated: bool) -> Decoding:
        """The key of the generate call that can answer it beside others: a gated answer
        is always greedy, so only its token budget matters.

        >>> Question("a", 8, temperature=0.7).decoding(True)
        (8, 0.0, 1.0, 0, (), None)
        """
        if gated:
            return (self.max_new_tokens, 0.0, 1.0, 0, (), None)
        return (
            self.max_new_tokens,
            self.temperature,
            self.top_p,
            self.seed,
            self.stop,
            self.json_schema,
        )


Decoding = tuple[int, float, float, int, tuple[str, ...], str | None]


@dataclass(frozen=True)
class Answer:
    text: str
    route: Route
    risk: float | None
    finish_reason: str

    @property
    def outcome(self) -> Outcome:
        return OUTCOMES[self.route]


@dataclass
class GatedModel:
    """What `serve` answers with: the engine, its probe as a risk function (None: no gate),
    the refine strategy and its thresholds (the ones the session chose on dev, or the
    user's), and the refine settings of its sampled routes."""

    name: str
    engine: Engine
    risk_fn: RiskFn | None = None
    strategy: Strategy = "none"
    thresholds: Thresholds = field(default_factory=Thresholds)
    k: int = REFINE.k
    temperature: float = REFINE.temperature
    abstention: str = REFINE.abstention_text
    context_length: int = 2048
    count_tokens: Callable[[str], int] = lambda text: len(text.split())

    @property
    def gated(self) -> bool:
        return self.strategy != "none"

    def answer(self, questions: Sequence[Question]) -> list[Answer]:
        """Every question answered, those that decode alike in one call each."""
        groups: dict[Decoding, list[int]] = {}
        for index, question in enumerate(questions):
            groups.setdefault(question.decoding(self.gated), []).append(index)
        answers: dict[int, Answer] = {}
        for decoding, indices in groups.items():
            found = self._answer_group([questions[i].prompt for i in indices], decoding)
            answers.update(zip(indices, found, strict=True))
        return [answers[i] for i in range(len(questions))]

    def _answer_group(self, prompts: list[str], decoding: Decoding) -> list[Answer]:
        max_new_tokens, temperature, top_p, seed, stop, json_schema = decoding
        if self.gated:
            refined = refine_answers(
                self.engine,
                prompts,
                strategy=self.strategy,
                thresholds=self.thresholds,
                k=self.k,
                temperature=self.temperature,
                max_new_tokens=max_new_tokens,
                seed=seed,
                abstention=self.abstention,
                risk_fn=self.risk_fn,
            )
            return [_from_refined(r) for r in refined]
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            json_schema=json_schema,
        )
        generations = self.engine.generate(prompts, params, risk_fn=self.risk_fn)
        return [
            Answer(g.samples[0].text, "greedy", g.risk, g.samples[0].finish_reason)
            for g in generations
        ]


def _from_refined(refined: Refined) -> Answer:
    return Answer(refined.text, refined.route, refined.risk, refined.finish_reason)


def measured_by(engine: Engine) -> tuple[int, Callable[[str], int]]:
    """The engine's context length and a count of the tokens a question takes once the
    engine has wrapped it (its chat template); an engine without a tokenizer in this
    process is measured in words, with a 2048-token context."""
    from engines.base import FormatsPrompts, TrainableInPlace

    if not isinstance(engine, TrainableInPlace):
        return 2048, lambda text: len(text.split())
    tokenizer, config = engine.tokenizer, engine.model.config
    wrap = engine.format_prompt if isinstance(engine, FormatsPrompts) else (lambda text: text)
    context = int(getattr(config, "max_position_embeddings", 2048))
    return context, lambda text: len(tokenizer(wrap(text), add_special_tokens=False)["input_ids"])
