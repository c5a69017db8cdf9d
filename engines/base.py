"""The `Engine` protocol and the records it returns.

Layer indexing used everywhere: index 0 is the embedding output, index i (1..L) the output
of decoder layer i, taken from forward hooks (so before the model's final norm). A
capture point is named `layer.{i}.query_token` (last prompt token) or
`layer.{i}.prompt_mean` (mean over the prompt's non-padding tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the protocol does not load torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FinishReason = Literal["stop", "length"]
FEATURE_KINDS = ("query_token", "prompt_mean")
ProgressFn = Callable[[int, int], None]  # (done, total) prompts


@dataclass(frozen=True)
class SamplingParams:
    """How `Engine.generate` draws: `n` samples per prompt, greedy when `temperature` <= 0
    (the n samples are then one answer, copied), else temperature then nucleus (`top_p`)
    sampling, seeded by `seed`; each sample ends at an end token, at the first of the
    `stop` strings (cut before it), or after `max_new_tokens`.

    >>> SamplingParams().greedy, SamplingParams(temperature=0.7).greedy
    (True, False)
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0
    # a JSON Schema (as a string; "{}": any JSON object) every answer must follow: decoding
    # is constrained to it (engines that cannot constrain refuse it)
    json_schema: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Sample:
    """One sampled completion."""

    text: str
    token_ids: list[int]
    logprobs: list[float]  # log p(token) under the model's raw distribution, per new token
    entropies: list[float]  # entropy (nats) of the raw next-token distribution, per new token
    finish_reason: FinishReason

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / max(len(self.logprobs), 1)

    @property
    def mean_entropy(self) -> float:
        return sum(self.entropies) / max(len(self.entropies), 1)


@dataclass(frozen=True)
class PromptStates:
    """Prefill hidden states of one prompt, every layer."""

    query_token: torch.Tensor  # (L+1, H) state of the last prompt token
    prompt_mean: torch.Tensor  # (L+1, H) mean over the prompt's tokens

    def feature(self, kind: str) -> torch.Tensor:
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; expected one of {FEATURE_KINDS}")
        return self.query_token if kind == "query_token" else self.prompt_mean


@dataclass
class Generation:
    """All samples drawn for one prompt, with its prefill states when captured."""

    prompt: str
    samples: list[Sample]
    states: PromptStates | None = None
    risk: float | None = None  # set when `generate` was given a `risk_fn`
    extras: dict[str, float] = field(default_factory=dict)


# A prompt's risk from its prefill states (a probe, `probes.runtime.RiskScorer`): given to
# `Engine.generate`, every Generation gets `risk` from its own states, no extra forward pass.
RiskFn = Callable[[PromptStates], float]


class FeatureLayers(Protocol):
    @property
    def layers(self) -> tuple[int, ...]: ...


@runtime_checkable
class LayeredRiskFn(Protocol):
    """A risk function that names the layers it reads (`spec.layers`, as a fitted probe's
    `RiskScorer` does): a prefill for it may stop at the deepest."""

    @property
    def spec(self) -> FeatureLayers: ...

    def __call__(self, states: PromptStates) -> float: ...


def score_risk(generations: list[Generation], risk_fn: RiskFn | None) -> list[Generation]:
    """`generations`, each with `risk` from its own prefill states (when it has them)."""
    if risk_fn is not None:
        for generation in generations:
            if generation.states is not None:
                generation.risk = float(risk_fn(generation.states))
    return generations


@runtime_checkable
class Engine(Protocol):
    """What every model engine offers. Hidden-state capture during generation is optional:
    engines that lack it set `captures_prefill = False` and callers use `hidden_states`."""

    name: str
    num_layers: int
    captures_prefill: bool

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights: a probe is valid for one fingerprint."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        """One Generation per prompt, in order, of `params.n` samples; with `capture`, the
        prompt's prefill states (where the engine captures them); with `risk_fn`, the risk
        it gives those states."""
        ...

    def hidden_states(
        self,
        prompts: Sequence[str],
        *,
        until_layer: int | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[PromptStates]:
        """Prefill states of every prompt; with `until_layer`, layers 0..until_layer only
        (an engine may stop its forward pass there)."""
        ...


# What only some engines can do: check with `isinstance(engine, Closeable)` and so on.


@runtime_checkable
class Closeable(Protocol):
    """An engine with processes or actors of its own, ended by `close` (vLLM's)."""

    def close(self) -> None: ...


@runtime_checkable
class Releasable(Protocol):
    """An engine holding cluster resources that `release` hands back until its next call
    (the Ray generation actors, before training needs their CPUs/GPUs)."""

    def release(self) -> None: ...


@runtime_checkable
class TrainableInPlace(Protocol):
    """An engine whose weights live in this process as a transformers model, so a copy of
    them can be trained here (the transformers engine, and vLLM's transformers copy)."""

    @property
    def model(self) -> PreTrainedModel: ...

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...


@runtime_checkable
class FormatsPrompts(Protocol):
    """An engine that wraps each prompt (in its chat template) before the model reads it."""

    def format_prompt(self, prompt: str) -> str: ...


@runtime_checkable
class ServesVersions(Protocol):
    """An engine that runs other weights on its own workers (the Ray cluster engine):
    `for_version(folder)` is the engine of a trained version's merged folder; `source` is
    where its own weights are, as it was given them."""

    source: str

    def for_version(self, source: str) -> Engine: ...
