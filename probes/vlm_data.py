"""Probe data of a vision-language model: an image task's items with the model's greedy
answers, labels and the three prefill feature families, as the `ProbeData` every probe is
fitted and evaluated on (so `sweep`, `evaluate` and the saved `Probe` work unchanged).

    engine = VLMEngine.load(folder)
    data = collect_vlm(engine, task, items, k=5)       # answers, families, consistency samples
    results = sweep_families(data)                     # one validation-chosen layer per family

In the `FeatureSet`, the families are kinds: `query_token` and `vision_tokens` with a row per
layer (L+1), `visual` with one row (the vision tower's pooled output, `layer.0.visual`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from engines.base import ProgressFn, SamplingParams
from engines.vlm import VLMEngine
from probes.data import ProbeData
from probes.features import FeatureSet, prompt_template_hash
from probes.labels import label_generations
from probes.sweep import SweepRefusedError, SweepResult, sweep
from probes.vlm import VLM_FEATURE_KINDS, VLMFeatures, extract_vlm_features
from tasks.base import Item, Task

BLANK = (255, 255, 255)  # the question-only baseline's image: the task's empty canvas


def item_images(items: Sequence[Item]) -> list[Image.Image]:
    """Each item's image; ValueError naming the first item that has none."""
    missing = [item.id for item in items if item.image is None]
    if missing:
        raise ValueError(f"item {missing[0]!r} has no image: a vision-language model needs one")
    return [item.image for item in items]  # type: ignore[misc]


def blank_like(image: Image.Image) -> Image.Image:
    """An empty canvas of the image's size: the question alone, nothing to see."""
    return Image.new("RGB", image.size, BLANK)


def vlm_feature_set(
    features: VLMFeatures, item_ids: Sequence[str], engine: VLMEngine
) -> FeatureSet:
    """The families as FeatureSet kinds; `visual` gets one layer (row 0)."""
    arrays = {
        kind: features.feature(kind).float().cpu().numpy()
        for kind in ("query_token", "vision_tokens")
    }
    arrays["visual"] = features.visual.float().cpu().numpy()[:, None, :]  # (N, 1, H_v)
    return FeatureSet(
        list(item_ids),
        arrays,
        fingerprint=engine.fingerprint,
        template_hash=prompt_template_hash(engine),
        model_name=engine.name,
        meta={"family": str(features.notes.get("family", ""))},
    )


def vlm_features(
    engine: VLMEngine,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    *,
    batch_size: int = 16,
    progress_cb: ProgressFn | None = None,
) -> VLMFeatures:
    """The three families of each (prompt, image), from one prefill per batch."""
    with torch.inference_mode():
        return extract_vlm_features(
            engine.model,
            engine.processor,
            images,
            prompts,
            batch_size=batch_size,
            format_prompt=engine.format_prompt,
            on_progress=progress_cb,
        )


def collect_vlm(
    engine: VLMEngine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """Greedy answers (labels, mean logprob and entropy), then the feature families from a
    prefill of each prompt with its image. `timing`: seconds per item of the greedy answer
    and of the prefill alone (what the probe costs, run before the answer)."""
    if not items:
        raise ValueError(f"task {task.name!r}: no items to collect")
    images = item_images(items)
    prompts = [item.prompt for item in items]
    budget = max_new_tokens or task.max_new_tokens
    started = time.perf_counter()
    generations = engine.generate(
        prompts, images, SamplingParams(max_new_tokens=budget), on_progress=progress_cb
    )
    answered = time.perf_counter()
    features = vlm_features(engine, prompts, images, batch_size=batch_size)
    done = time.perf_counter()
    greedy = [generation.samples[0] for generation in generations]
    return ProbeData(
        task=task.name,
        max_new_tokens=budget,
        item_ids=[item.id for item in items],
        groups=[item.group for item in items],
        prompts=prompts,
        features=vlm_feature_set(features, [item.id for item in items], engine),
        labels=label_generations(task, items, generations),
        mean_logprob=np.array([s.mean_logprob for s in greedy], dtype=np.float64),
        mean_entropy=np.array([s.mean_entropy for s in greedy], dtype=np.float64),
        timing={
            "greedy_generation": (answered - started) / len(items),
            "prefill_only": (done - answered) / len(items),
        },
    )


def sample_consistency_vlm(
    engine: VLMEngine,
    data: ProbeData,
    images: Sequence[Image.Image],
    *,
    k: int = 5,
    temperature: float = 0.7,
    seed: int = 0,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """K sampled answers per row (rows aligned with `images`), for the self-consistency
    baseline; timing["self_consistency"] = seconds per item."""
    if k < 2 or temperature <= 0:
        raise ValueError("self-consistency needs k >= 2 samples at temperature > 0")
    params = SamplingParams(
        n=k, temperature=temperature, max_new_tokens=data.max_new_tokens, seed=seed
    )
    started = time.perf_counter()
    generations = engine.generate(data.prompts, images, params, on_progress=progress_cb)
    answers = {
        item_id: [sample.text for sample in generation.samples]
        for item_id, generation in zip(data.item_ids, generations, strict=True)
    }
    seconds = (time.perf_counter() - started) / max(len(data), 1)
    return replace(
        data,
        consistency={**data.consistency, **answers},
        timing={**data.timing, "self_consistency": seconds},
    )


def only_kind(data: ProbeData, kind: str) -> ProbeData:
    """The same rows with one feature family only (a sweep over it alone)."""
    features = replace(data.features, arrays={kind: data.features.arrays[kind]})
    return replace(data, features=features)


def sweep_families(
    data: ProbeData, *, kinds: Sequence[str] = VLM_FEATURE_KINDS, seed: int = 0
) -> dict[str, SweepResult]:
    """One sweep per family (its layers fitted on train, chosen on validation, calibrated
    on validation); a family whose splits hold one class refuses them all, as `sweep` does."""
    results: dict[str, SweepResult] = {}
    for kind in kinds:
        results[kind] = sweep(only_kind(data, kind), seed=seed)
    return results


def best_family(results: dict[str, SweepResult]) -> SweepResult:
    """The family whose chosen probe has the highest validation AUROC (ties: first)."""
    if not results:
        raise SweepRefusedError("no feature family to choose from")
    return max(results.values(), key=lambda result: result.validation.auroc)
