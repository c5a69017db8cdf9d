"""The VLM engine and the probe data it yields, on the tiny shapes VLM the tests train
(tests/conftest.py: `tiny_vlm`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import vlm_training as vlm
from engines.base import SamplingParams
from engines.vlm import VLMEngine, VLMFolderError, is_vlm_folder
from probes.data import ProbeData
from probes.features import FeatureSet
from probes.vlm_data import (
    answer_and_read,
    best_family,
    blank_like,
    collect_vlm,
    item_images,
    only_kind,
    sweep_families,
    vlm_features,
)
from tasks.shapes import build_shapes_task


@pytest.fixture(scope="module")
def engine(tiny_vlm) -> VLMEngine:  # type: ignore[no-untyped-def]
    _, folder = tiny_vlm
    return VLMEngine.load(folder)


def test_a_text_model_folder_is_not_a_vlm(tmp_path: Path, tiny_vlm) -> None:  # type: ignore[no-untyped-def]
    assert is_vlm_folder(tiny_vlm[1])
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert not is_vlm_folder(tmp_path) and not is_vlm_folder(tmp_path / "nope")
    with pytest.raises(VLMFolderError, match="holds no vision-language model"):
        VLMEngine.load(tmp_path)


def test_greedy_answers_are_the_training_runs_with_their_logprobs(engine: VLMEngine) -> None:
    items = list(vlm.build_splits(vlm.TINY_RECIPE).test[:12])
    with vlm.torch_threads(vlm.TINY_RECIPE.threads):
        expected = vlm.generate_answers(engine.model, engine.processor, items)
        generations = engine.generate(
            [i.prompt for i in items], item_images(items), SamplingParams(max_new_tokens=4)
        )
    assert [g.samples[0].text for g in generations] == [a.strip() for a in expected]
    for generation in generations:
        sample = generation.samples[0]
        assert len(sample.logprobs) == len(sample.entropies) == len(sample.token_ids) >= 1
        assert all(lp <= 0 and math.isfinite(lp) for lp in sample.logprobs)
        assert all(h >= 0 for h in sample.entropies)
        assert sample.finish_reason == "stop"  # "Yes"/"No" then the end-of-turn token


def test_sampling_draws_n_seeded_answers(engine: VLMEngine) -> None:
    items = list(vlm.build_splits(vlm.TINY_RECIPE).test[:3])
    params = SamplingParams(n=4, temperature=1.5, max_new_tokens=3, seed=7)
    first = engine.generate([i.prompt for i in items], item_images(items), params)
    again = engine.generate([i.prompt for i in items], item_images(items), params)
    assert [len(g.samples) for g in first] == [4, 4, 4]
    assert [[s.token_ids for s in g.samples] for g in first] == [
        [s.token_ids for s in g.samples] for g in again
    ]


def test_collected_data_has_the_three_families_and_saves(engine: VLMEngine, tmp_path: Path) -> None:
    task = build_shapes_task(n_images=6, questions_per_image=4, seed=3, image_size=48)
    data = collect_vlm(engine, task, list(task.items))
    layers = vlm.TINY_TEXT["layers"] + 1
    hidden = vlm.TINY_TEXT["hidden_size"]
    shapes = {kind: array.shape for kind, array in data.features.arrays.items()}
    assert shapes == {
        "query_token": (24, layers, hidden),
        "vision_tokens": (24, layers, hidden),
        "visual": (24, 1, vlm.TINY_RECIPE.vision_hidden),
    }
    assert data.features.fingerprint == engine.fingerprint
    assert {"greedy_generation", "prefill_only"} <= set(data.timing)
    assert [label.answer for label in data.labels] == [
        g.samples[0].text
        for g in engine.generate(
            data.prompts, item_images(task.items), SamplingParams(max_new_tokens=4)
        )
    ]
    again = ProbeData.load(data.save(tmp_path / "data"))
    assert {k: a.shape for k, a in again.features.arrays.items()} == shapes
    np.testing.assert_array_equal(again.features.arrays["visual"], data.features.arrays["visual"])
    # The image is read: a blank canvas gives other features for the same question.
    item = task.items[0]
    real = vlm_features(engine, [item.prompt], item_images([item]))
    blank = vlm_features(engine, [item.prompt], [blank_like(item_images([item])[0])])
    assert not torch.allclose(real.vision_tokens, blank.vision_tokens)


def test_one_layer_kinds_round_trip(tmp_path: Path) -> None:
    arrays = {
        "query_token": np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
        "visual": np.ones((2, 1, 5), dtype=np.float32),
    }
    features = FeatureSet(["a", "b"], arrays, "fp", "tpl")
    features.save(tmp_path)
    loaded = FeatureSet.load(tmp_path)
    assert {k: v.shape for k, v in loaded.arrays.items()} == {
        "query_token": (2, 3, 4),
        "visual": (2, 1, 5),
    }
    np.testing.assert_array_equal(loaded.arrays["query_token"], arrays["query_token"])


def test_each_family_gets_its_own_validation_chosen_probe(engine: VLMEngine) -> None:
    task = build_shapes_task(n_images=40, questions_per_image=4, seed=11, image_size=48)
    data = collect_vlm(engine, task, list(task.items))
    results = sweep_families(data)
    assert list(results) == ["visual", "vision_tokens", "query_token"]
    assert results["visual"].chosen.spec.name == "layer.0.visual"
    for kind, result in results.items():
        assert result.probe.card.feature_kind == kind
        assert {row.spec.kind for row in result.rows} == {kind}
    assert best_family(results).validation.auroc == max(
        r.validation.auroc for r in results.values()
    )
    assert only_kind(data, "visual").features.kinds == ["visual"]


def test_features_read_inside_the_answer_equal_a_prefill_alone(engine: VLMEngine) -> None:
    """The probe inside generation reads the answer's own prefill: the same features as a
    forward of its own (measured here: equal to the last bit, same process and threads),
    the decode steps after it ignored, the answers unchanged."""
    items = list(vlm.build_splits(vlm.TINY_RECIPE).test[:10])
    prompts, images = [i.prompt for i in items], item_images(items)
    generations, inside = answer_and_read(engine, prompts, images, 4)
    alone = vlm_features(engine, prompts, images)
    for kind in ("visual", "vision_tokens", "query_token"):
        torch.testing.assert_close(inside.feature(kind), alone.feature(kind))
    assert inside.notes["forward_calls"]["base"] >= 2  # the prefill and a decode step
    plain = engine.generate(prompts, images, SamplingParams(max_new_tokens=4))
    assert [g.samples[0].token_ids for g in generations] == [g.samples[0].token_ids for g in plain]
