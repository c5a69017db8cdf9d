"""A scripted engine and toy task for probe tests: random prefill states with a planted
signal (whether the engine "knows" the answer) in one layer and feature kind; toy feature
rows and a probe made up from given weights."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import torch

from engines.base import (
    Generation,
    ProgressFn,
    PromptStates,
    RiskFn,
    Sample,
    SamplingParams,
    score_risk,
)
from probes.artifact import Probe, ProbeCard, SplitInfo
from probes.calibration import Calibrator
from probes.features import FeatureSpec
from tasks.base import Item, Task
from tasks.verifiers import alias_match


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def toy_task(n: int = 300, *, items_per_group: int = 1) -> Task:
    """'What is the capital of C{i}?' -> 'A{i}'; groups of `items_per_group` items."""
    items = tuple(
        Item(
            id=f"toy-{i:04d}",
            prompt=f"What is the capital of C{i}?",
            answers=(f"A{i}",),
            group=f"g{i // items_per_group}",
        )
        for i in range(n)
    )
    return Task(
        name="toy", items=items, verifier=alias_match, verifier_name="alias", max_new_tokens=16
    )


class FakeEngine:
    """Answers right when `knows(prompt)`; that fact is written into dimension 0 of
    `signal_layer` of `signal_kind` (+/- strength), every other state is N(0, 1) noise.
    Prompts whose hash is 0 mod `truncate_every` finish by length (cut off)."""

    captures_prefill = True

    def __init__(
        self,
        *,
        num_layers: int = 4,
        hidden: int = 8,
        signal_layer: int = 2,
        signal_kind: str = "query_token",
        strength: float = 2.0,
        fingerprint: str = "fake-fingerprint-0",
        truncate_every: int = 0,
        know_rate: float = 0.45,
    ) -> None:
        self.name = "fake"
        self.fingerprint = fingerprint
        self.num_layers = num_layers
        self.hidden = hidden
        self.signal_layer = signal_layer
        self.signal_kind = signal_kind
        self.strength = strength
        self.truncate_every = truncate_every
        self.know_rate = know_rate
        self.calls: list[tuple[int, int, float]] = []  # (prompts, n, temperature) per call

    def format_prompt(self, prompt: str) -> str:
        return f"<user>{prompt}<assistant>"

    def knows(self, prompt: str) -> bool:
        return (_hash(prompt) % 1000) / 1000 < self.know_rate

    def truncates(self, prompt: str) -> bool:
        return bool(self.truncate_every) and _hash("cut" + prompt) % self.truncate_every == 0

    def states(self, prompt: str) -> PromptStates:
        rng = np.random.default_rng(_hash(self.fingerprint + prompt) % 2**32)
        query = torch.tensor(
            rng.standard_normal((self.num_layers + 1, self.hidden)), dtype=torch.float32
        )
        mean = torch.tensor(
            rng.standard_normal((self.num_layers + 1, self.hidden)), dtype=torch.float32
        )
        planted = query if self.signal_kind == "query_token" else mean
        planted[self.signal_layer, 0] += self.strength * (1.0 if self.knows(prompt) else -1.0)
        return PromptStates(query_token=query, prompt_mean=mean)

    def _sample(self, prompt: str, rng: np.random.Generator, temperature: float) -> Sample:
        number = re.findall(r"\d+", prompt)[-1]
        right = self.knows(prompt)
        if temperature > 0 and rng.random() < (0.1 if right else 0.7):
            right = not right
        text = f"The capital is A{number}." if right else f"The capital is B{rng.integers(0, 3)}."
        finish = "stop"
        if self.truncates(prompt):
            text, finish = "The capital is", "length"
        mean_lp = -0.2 if self.knows(prompt) else -0.9
        logprobs = list(mean_lp + 0.3 * rng.standard_normal(4))
        entropies = list(np.abs(-mean_lp + 0.3 * rng.standard_normal(4)))
        return Sample(text, [1, 2, 3, 4], logprobs, entropies, finish)  # type: ignore[arg-type]

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        self.calls.append((len(prompts), params.n, params.temperature))
        generations = []
        for prompt in prompts:
            rng = np.random.default_rng(_hash(f"{params.seed}:{prompt}") % 2**32)
            samples = [self._sample(prompt, rng, params.temperature) for _ in range(params.n)]
            states = self.states(prompt) if capture else None
            generations.append(Generation(prompt, samples, states))
        return score_risk(generations, risk_fn)

    def hidden_states(
        self,
        prompts: Sequence[str],
        *,
        until_layer: int | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[PromptStates]:
        states = [self.states(prompt) for prompt in prompts]
        if until_layer is None:
            return states
        return [
            PromptStates(s.query_token[: until_layer + 1], s.prompt_mean[: until_layer + 1])
            for s in states
        ]


def toy_rows(n: int = 200, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` feature rows of width `d` and labels that depend on two of them, nonlinearly."""
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, d)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] ** 2 / 4 + rng.normal(0, 1, n) > 4.0).astype(np.int64)
    return x, y


def make_probe(
    weights: dict[str, np.ndarray],
    *,
    layers: tuple[int, ...] = (2,),
    kind: str = "query_token",
    calibrator: Calibrator | None = None,
    fingerprint: str = "fake-fingerprint-0",
    template_hash: str = "t0",
) -> Probe:
    """A probe of `weights` (as `export_weights` writes them) with a card made up to fit."""
    card = ProbeCard(
        model_name="fake",
        fingerprint=fingerprint,
        template_hash=template_hash,
        feature=FeatureSpec(kind, layers).name,
        layers=list(layers),
        feature_kind=kind,
        input_dim=int(weights["scaler.mean"].shape[0]),
        estimator="mlp" if "mlp.0.weight" in weights else "logreg",
        task="toy",
        split=SplitInfo(seed=0, fractions=(0.6, 0.2, 0.2), sizes={"train": 1}),
        calibration=(calibrator or Calibrator()).to_json(),
    )
    return Probe(card, weights)
