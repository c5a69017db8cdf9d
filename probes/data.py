"""A task's items with the model's greedy answers, labels and prefill features: the data
every probe is fitted and evaluated on.

    data = collect(engine, task)                      # greedy answers + their prefill states
    data = sample_consistency(engine, data, k=5)      # the self-consistency baseline's input
    data.save(folder); ProbeData.load(folder)
    data.relabeled(task)                              # cached answers, today's verifier
    ProbeData.concat([data.subset(rows), extra], "capitals+facts")
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engines.base import Engine, Generation, ProgressFn, SamplingParams
from probes.features import FeatureSet, prompt_template_hash
from probes.labels import Label, label_generations, relabel
from tasks.base import Item, Task

DATA_SCHEMA_VERSION = 1


@dataclass
class ProbeData:
    """One task's items with the model's greedy answers, labels, prefill features and the
    inputs of the baselines; rows aligned across every field."""

    task: str
    max_new_tokens: int
    item_ids: list[str]
    groups: list[str]
    prompts: list[str]
    features: FeatureSet
    labels: list[Label]
    mean_logprob: NDArray[np.float64]  # (N,) of the greedy answer
    mean_entropy: NDArray[np.float64]  # (N,)
    consistency: dict[str, list[str]] = field(default_factory=dict)  # item id -> K answers
    timing: dict[str, float] = field(default_factory=dict)  # method -> seconds per item

    def __len__(self) -> int:
        return len(self.item_ids)

    def with_samples(self, answers: dict[str, list[str]], seconds_per_item: float) -> ProbeData:
        """The self-consistency baseline's samples added (item id -> K answers), with what
        they cost per item."""
        return replace(
            self,
            consistency={**self.consistency, **answers},
            timing={**self.timing, "self_consistency": seconds_per_item},
        )

    @classmethod
    def of_answers(
        cls,
        task: Task,
        items: Sequence[Item],
        generations: Sequence[Generation],
        features: FeatureSet,
        *,
        max_new_tokens: int,
        timing: dict[str, float],
    ) -> ProbeData:
        """Rows from greedy answers (each generation's first sample) and their prefill
        features: labels by the task's verifier, the baselines' mean logprob and entropy."""
        greedy = [generation.samples[0] for generation in generations]
        return cls(
            task=task.name,
            max_new_tokens=max_new_tokens,
            item_ids=[item.id for item in items],
            groups=[item.group for item in items],
            prompts=[item.prompt for item in items],
            features=features,
            labels=label_generations(task, items, generations),
            mean_logprob=np.array([s.mean_logprob for s in greedy], dtype=np.float64),
            mean_entropy=np.array([s.mean_entropy for s in greedy], dtype=np.float64),
            timing=timing,
        )

    def save(self, folder: str | Path) -> Path:
        """`features/` (FeatureSet), `items.jsonl` (one row per item), `data.json` last."""
        folder = Path(folder)
        self.features.save(folder / "features")
        rows = [
            {
                "id": item_id,
                "group": group,
                "prompt": prompt,
                "wrong": label.wrong,
                "finish_reason": label.finish_reason,
                "answer": label.answer,
                "mean_logprob": float(lp),
                "mean_entropy": float(ent),
                "samples": self.consistency.get(item_id),
            }
            for item_id, group, prompt, label, lp, ent in zip(
                self.item_ids,
                self.groups,
                self.prompts,
                self.labels,
                self.mean_logprob,
                self.mean_entropy,
                strict=True,
            )
        ]
        (folder / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        meta = {
            "schema_version": DATA_SCHEMA_VERSION,
            "task": self.task,
            "max_new_tokens": self.max_new_tokens,
            "timing_s_per_item": self.timing,
        }
        (folder / "data.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ProbeData:
        folder = Path(folder)
        meta = json.loads((folder / "data.json").read_text())
        if meta.get("schema_version") != DATA_SCHEMA_VERSION:
            raise ValueError(
                f"{folder}/data.json: schema_version {meta.get('schema_version')!r}; re-collect"
            )
        rows = [
            json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line
        ]
        features = FeatureSet.load(folder / "features")
        if features.item_ids != [row["id"] for row in rows]:
            raise ValueError(f"{folder}: features and items.jsonl list different items; re-collect")
        return cls(
            task=meta["task"],
            max_new_tokens=meta["max_new_tokens"],
            item_ids=[row["id"] for row in rows],
            groups=[row["group"] for row in rows],
            prompts=[row["prompt"] for row in rows],
            features=features,
            labels=[
                Label(row["id"], row["wrong"], row["finish_reason"], row["answer"]) for row in rows
            ],
            mean_logprob=np.array([row["mean_logprob"] for row in rows], dtype=np.float64),
            mean_entropy=np.array([row["mean_entropy"] for row in rows], dtype=np.float64),
            consistency={row["id"]: row["samples"] for row in rows if row.get("samples")},
            timing=dict(meta.get("timing_s_per_item", {})),
        )

    def relabeled(self, task: Task) -> ProbeData:
        """The same answers judged by the task's current verifier (finish reasons kept)."""
        return replace(self, labels=relabel(task, self.labels))

    def subset(self, rows: Sequence[int] | NDArray[np.int64]) -> ProbeData:
        """Only `rows`, in that order, with their sampled answers; timings (per item) kept."""
        index = np.asarray(rows, dtype=np.int64)
        item_ids = [self.item_ids[i] for i in index]
        return replace(
            self,
            item_ids=item_ids,
            groups=[self.groups[i] for i in index],
            prompts=[self.prompts[i] for i in index],
            features=self.features.subset(index),
            labels=[self.labels[i] for i in index],
            mean_logprob=self.mean_logprob[index],
            mean_entropy=self.mean_entropy[index],
            consistency={i: self.consistency[i] for i in item_ids if i in self.consistency},
        )

    @classmethod
    def concat(cls, parts: Sequence[ProbeData], task: str) -> ProbeData:
        """Rows of several collections of one model and prompt template as one task (e.g.
        extra training rows from another task). Their timings differ, so none is kept."""
        features = FeatureSet.concat([part.features for part in parts])
        if len(set(features.item_ids)) < len(features):
            raise ValueError("item ids repeat across the parts; join distinct items only")
        return cls(
            task=task,
            max_new_tokens=max(part.max_new_tokens for part in parts),
            item_ids=list(features.item_ids),
            groups=[group for part in parts for group in part.groups],
            prompts=[prompt for part in parts for prompt in part.prompts],
            features=features,
            labels=[label for part in parts for label in part.labels],
            mean_logprob=np.concatenate([part.mean_logprob for part in parts]),
            mean_entropy=np.concatenate([part.mean_entropy for part in parts]),
            consistency={k: v for part in parts for k, v in part.consistency.items()},
        )


def _batches(count: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` rows.

    >>> _batches(5, 2)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    return [slice(start, min(start + size, count)) for start in range(0, count, max(size, 1))]


def collect(
    engine: Engine,
    task: Task,
    items: Sequence[Item] | None = None,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    prefill_timing_prompts: int = 32,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """Greedy answers with prefill capture (one pass per prompt batch), verifier labels,
    and the greedy answer's mean logprob and entropy. `timing` gets seconds per item of
    greedy generation and, on the first `prefill_timing_prompts` prompts, of a standalone
    prefill (what the probe costs when run before, not during, generation)."""
    chosen = list(task.items if items is None else items)
    if not chosen:
        raise ValueError(f"task {task.name!r}: no items to collect")
    budget = max_new_tokens or task.max_new_tokens
    prompts = [item.prompt for item in chosen]
    generations: list[Generation] = []
    started = time.perf_counter()
    for part in _batches(len(prompts), batch_size):
        generations += engine.generate(
            prompts[part], SamplingParams(max_new_tokens=budget), capture=True
        )
        if progress_cb:
            progress_cb(len(generations), len(prompts))
    timing = {"greedy_generation": (time.perf_counter() - started) / len(prompts)}
    states = [g.states for g in generations if g.states is not None]
    if len(states) < len(generations):  # an engine that cannot capture during generation
        states = list(engine.hidden_states(prompts))
    if prefill_timing_prompts > 0:
        timed = prompts[:prefill_timing_prompts]
        started = time.perf_counter()
        engine.hidden_states(timed)
        timing["prefill_only"] = (time.perf_counter() - started) / len(timed)
    features = FeatureSet.from_states(
        states,
        [item.id for item in chosen],
        fingerprint=engine.fingerprint,
        template_hash=prompt_template_hash(engine),
        model_name=engine.name,
    )
    return ProbeData.of_answers(
        task, chosen, generations, features, max_new_tokens=budget, timing=timing
    )


def sample_consistency(
    engine: Engine,
    data: ProbeData,
    *,
    k: int = 5,
    temperature: float = 0.7,
    rows: Sequence[int] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """K sampled answers at temperature T > 0 for `rows` (default: all), for the
    self-consistency baseline; timing["self_consistency"] = seconds per item."""
    if k < 2 or temperature <= 0:
        raise ValueError("self-consistency needs k >= 2 samples at temperature > 0")
    chosen = list(range(len(data)) if rows is None else rows)
    prompts = [data.prompts[i] for i in chosen]
    answers: dict[str, list[str]] = {}
    started = time.perf_counter()
    done = 0
    for part in _batches(len(prompts), batch_size):
        params = SamplingParams(
            n=k,
            temperature=temperature,
            max_new_tokens=max_new_tokens or data.max_new_tokens,
            seed=seed + part.start,
        )
        generations = engine.generate(prompts[part], params, capture=False)
        for row, generation in zip(chosen[part], generations, strict=True):
            answers[data.item_ids[row]] = [sample.text for sample in generation.samples]
        done += len(generations)
        if progress_cb:
            progress_cb(done, len(prompts))
    return data.with_samples(answers, (time.perf_counter() - started) / max(len(prompts), 1))
