"""Probe data of a vision-language model: an image task's items with the model's greedy
answers, labels and the three prefill feature families, as the `ProbeData` every probe is
fitted and evaluated on (so `sweep`, `evaluate` and the saved `Probe` work unchanged).

    engine = VLMEngine.load(folder)
    data = collect_vlm(engine, task, items)            # answers, families read in their prefill
    results = sweep_families(data)                     # one validation-chosen layer per family

In the `FeatureSet`, the families are kinds: `query_token` and `vision_tokens` with a row per
layer (L+1), `visual` with one row (the vision tower's pooled output, `layer.0.visual`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from engines.base import Generation, ProgressFn, SamplingParams
from engines.vlm import VLMEngine, Watch
from probes.data import ProbeData
from probes.features import FeatureSet, prompt_template_hash
from probes.sweep import SweepRefusedError, SweepResult, sweep
from probes.vlm import (
    VLM_FEATURE_KINDS,
    VLMFeatures,
    concat_features,
    extract_vlm_features,
    prefill_reader,
)
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


def reading_prefill(engine: VLMEngine) -> Watch:
    """The watch that reads the three families from each batch's prefill inside the
    engine's own generation (`VLMEngine.generate_watched`)."""
    token_id = getattr(engine.processor, "image_token_id", None)

    @contextmanager
    def watch(model: Any, batch: dict[str, torch.Tensor]) -> Iterator[Callable[[], VLMFeatures]]:
        with prefill_reader(model, batch, token_id if isinstance(token_id, int) else None) as (
            _,
            read,
        ):
            yield read

    return watch


def answer_and_read(
    engine: VLMEngine,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    max_new_tokens: int,
    progress_cb: ProgressFn | None = None,
) -> tuple[list[Generation], VLMFeatures]:
    """Greedy answers, and the three families read from their own prefill (one forward)."""
    generations, parts = engine.generate_watched(
        prompts,
        images,
        SamplingParams(max_new_tokens=max_new_tokens),
        reading_prefill(engine),
        on_progress=progress_cb,
    )
    return generations, concat_features(parts)


def collect_vlm(
    engine: VLMEngine,
    task: Task,
    items: Sequence[Item],
    *,
    max_new_tokens: int | None = None,
    prefill_timing_prompts: int = 32,
    progress_cb: ProgressFn | None = None,
) -> ProbeData:
    """Greedy answers (labels, mean logprob and entropy) with the feature families read
    from each answer's own prefill. `timing`: seconds per item of the greedy answer (with
    the reading) and, on the first `prefill_timing_prompts` items, of a prefill alone (what
    the probe costs when it runs before, not inside, the answer)."""
    if not items:
        raise ValueError(f"task {task.name!r}: no items to collect")
    images = item_images(items)
    prompts = [item.prompt for item in items]
    budget = max_new_tokens or task.max_new_tokens
    started = time.perf_counter()
    generations, features = answer_and_read(engine, prompts, images, budget, progress_cb)
    timing = {"greedy_generation": (time.perf_counter() - started) / len(items)}
    if prefill_timing_prompts > 0:
        timed = slice(0, prefill_timing_prompts)
        started = time.perf_counter()
        vlm_features(engine, prompts[timed], images[timed])
        timing["prefill_only"] = (time.perf_counter() - started) / len(prompts[timed])
    feature_set = vlm_feature_set(features, [item.id for item in items], engine)
    return ProbeData.of_answers(
        task, items, generations, feature_set, max_new_tokens=budget, timing=timing
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
    return data.with_samples(answers, (time.perf_counter() - started) / max(len(data), 1))


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
