"""Probe artifacts, feature sets on disk, and the run-time scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import SamplingParams
from probes.artifact import (
    CARD_FILE,
    WEIGHTS_FILE,
    ProbeLoadError,
    ProbeMismatchError,
    StaleProbeError,
    load_probe,
)
from probes.calibration import Calibrator, sigmoid
from probes.features import INDEX_FILE, FeatureSet, FeatureSpec, prompt_template_hash
from probes.fit import EstimatorConfig, export_weights, fit_estimator
from probes.runtime import RiskScorer
from tests.probe_fakes import FakeEngine, make_probe, toy_rows


@pytest.mark.parametrize(
    "config", [EstimatorConfig("logreg", C=0.5), EstimatorConfig("mlp", hidden=(16, 8), alpha=0.1)]
)
def test_risk_scorer_matches_sklearn_predict_proba(config: EstimatorConfig) -> None:
    x, y = toy_rows()
    pipeline = fit_estimator(x, y, config)
    scorer = RiskScorer(make_probe(export_weights(pipeline)))
    expected = pipeline.predict_proba(x)[:, 1]
    np.testing.assert_allclose(scorer.score(x), expected, atol=1e-6)
    np.testing.assert_allclose(scorer.score(torch.from_numpy(x)), expected, atol=1e-6)
    assert scorer.score(x[0]).shape == (1,)


def test_risk_scorer_applies_the_calibration() -> None:
    x, y = toy_rows()
    pipeline = fit_estimator(x, y, EstimatorConfig())
    calibrated = RiskScorer(
        make_probe(export_weights(pipeline), calibrator=Calibrator("platt", a=0.5, b=-1.0))
    )
    logits = calibrated.logits(x)
    np.testing.assert_allclose(sigmoid(logits), pipeline.predict_proba(x)[:, 1], atol=1e-6)
    np.testing.assert_allclose(calibrated.score(x), sigmoid(0.5 * logits - 1.0))
    assert ((calibrated.score(x) >= 0) & (calibrated.score(x) <= 1)).all()


def test_risk_scorer_reads_prompt_states() -> None:
    engine = FakeEngine(num_layers=4, hidden=8)
    states = engine.hidden_states([f"What is the capital of C{i}?" for i in range(50)])
    spec = FeatureSpec("query_token", (1, 3))
    x = np.stack([spec.vector(s).numpy() for s in states])  # (50, 16)
    y = np.arange(50) % 2
    scorer = RiskScorer(
        make_probe(export_weights(fit_estimator(x, y, EstimatorConfig())), layers=(1, 3))
    )
    assert [scorer(s) for s in states] == pytest.approx(scorer.score(x).tolist())


def test_run_time_scoring_needs_no_scikit_learn(tmp_path: Path) -> None:
    """Loading and scoring are numpy only (microseconds: the probe benchmark times them)."""
    x, y = toy_rows()
    folder = make_probe(export_weights(fit_estimator(x, y, EstimatorConfig()))).save(tmp_path / "p")
    code = (
        "import sys, numpy as np\n"
        "from probes.artifact import load_probe\n"
        "from probes.runtime import RiskScorer\n"
        f"RiskScorer(load_probe({str(folder)!r})).score(np.zeros((2, 12)))\n"
        "assert not [m for m in sys.modules if m.startswith('sklearn')], 'sklearn imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=300)


def test_risk_scorer_refuses_features_of_another_width() -> None:
    x, y = toy_rows(d=12)
    scorer = RiskScorer(make_probe(export_weights(fit_estimator(x, y, EstimatorConfig()))))
    with pytest.raises(ValueError, match="expects features of width 12, got shape \\(3, 10\\)"):
        scorer.score(np.zeros((3, 10)))


def test_probe_round_trip(tmp_path: Path) -> None:
    x, y = toy_rows()
    for config in (EstimatorConfig(), EstimatorConfig("mlp", hidden=(8,))):
        probe = make_probe(
            export_weights(fit_estimator(x, y, config)),
            calibrator=Calibrator("isotonic", knots_x=[-1.0, 1.0], knots_y=[0.1, 0.8]),
        )
        folder = probe.save(tmp_path / config.name)
        loaded = load_probe(
            folder, expected_fingerprint="fake-fingerprint-0", expected_template_hash="t0"
        )
        assert loaded.card == probe.card and loaded.card.weights_sha256
        assert loaded.weights.keys() == probe.weights.keys()
        for name in probe.weights:
            np.testing.assert_array_equal(loaded.weights[name], probe.weights[name])
        np.testing.assert_allclose(RiskScorer(loaded).score(x), RiskScorer(probe).score(x))
        card = json.loads((folder / CARD_FILE).read_text())
        assert card["schema_version"] == 1 and card["feature"] == "layer.2.query_token"
        assert {
            "fingerprint",
            "layers",
            "feature_kind",
            "template_hash",
            "split",
            "metrics",
            "calibration",
            "created_at",
        } <= set(card)


def test_a_probe_refuses_a_model_with_another_fingerprint(tmp_path: Path) -> None:
    x, y = toy_rows()
    folder = make_probe(
        export_weights(fit_estimator(x, y, EstimatorConfig())), fingerprint="aaa111"
    ).save(tmp_path / "p")
    with pytest.raises(StaleProbeError) as refused:
        load_probe(folder, expected_fingerprint="bbb222")
    message = str(refused.value)
    assert "\n" not in message
    assert "aaa111" in message and "bbb222" in message and "autodidact probe sweep" in message
    with pytest.raises(ProbeMismatchError, match="prompt-template hash t0"):
        load_probe(folder, expected_fingerprint="aaa111", expected_template_hash="other")
    assert load_probe(folder).card.fingerprint == "aaa111"  # no expectation: loads


def test_corrupt_or_foreign_probe_folders_are_refused(tmp_path: Path) -> None:
    x, y = toy_rows()
    folder = make_probe(export_weights(fit_estimator(x, y, EstimatorConfig()))).save(tmp_path / "p")
    with pytest.raises(ProbeLoadError, match="not a probe"):
        load_probe(tmp_path)
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ProbeLoadError, match="content hash"):
        load_probe(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    (folder / CARD_FILE).write_text(json.dumps(card | {"schema_version": 99}))
    with pytest.raises(ProbeLoadError, match="schema_version 99"):
        load_probe(folder)
    (folder / CARD_FILE).write_text(json.dumps({k: v for k, v in card.items() if k != "layers"}))
    with pytest.raises(ProbeLoadError, match="field 'layers'"):
        load_probe(folder)


def test_feature_set_round_trip_over_several_shards(tmp_path: Path) -> None:
    engine = FakeEngine(num_layers=3, hidden=8)
    prompts = [f"What is the capital of C{i}?" for i in range(10)]
    features = FeatureSet.from_states(
        engine.hidden_states(prompts),
        [f"id-{i}" for i in range(10)],
        fingerprint=engine.fingerprint,
        template_hash=prompt_template_hash(engine),
        model_name=engine.name,
    )
    assert features.arrays["query_token"].shape == (10, 4, 8)
    index_path = features.save(tmp_path, max_shard_bytes=3 * 10 * 8 * 4)  # 3 tensors a shard
    index = json.loads(index_path.read_text())
    assert index_path.name == INDEX_FILE
    assert len(set(index["weight_map"].values())) == 3  # 8 tensors (4 layers x 2 kinds)
    assert index["weight_map"]["layer.0.query_token"].startswith("features-00001-of-00003")
    assert {"fingerprint", "template_hash", "layers", "kinds", "item_ids"} <= set(index)
    loaded = FeatureSet.load(tmp_path)
    assert loaded.item_ids == features.item_ids and loaded.fingerprint == engine.fingerprint
    for kind in ("query_token", "prompt_mean"):
        np.testing.assert_array_equal(loaded.arrays[kind], features.arrays[kind])
    spec = FeatureSpec("prompt_mean", (3, 1))
    matrix = loaded.matrix(spec)  # (10, 16)
    assert matrix.shape == (10, 16)
    states = engine.hidden_states(prompts[:1])[0]
    np.testing.assert_array_equal(matrix[0], spec.vector(states).numpy())
    with pytest.raises(KeyError, match=r"layers run 0\.\.3"):
        loaded.matrix(FeatureSpec("query_token", (4,)))


def test_template_hash_follows_the_prompt_format() -> None:
    engine = FakeEngine()
    assert prompt_template_hash(engine) == prompt_template_hash(FakeEngine())
    assert prompt_template_hash(engine) != prompt_template_hash(object())


def test_risk_fn_on_the_transformers_engine_scores_its_own_prefill() -> None:
    from tests.tiny_models import tiny_engine

    engine = tiny_engine()
    prompts = ["What is 12 + 35?", "Hi", "Is there a red circle?", "What is the capital of France?"]
    spec = FeatureSpec("query_token", (1,))
    x = np.stack([spec.vector(s).numpy() for s in engine.hidden_states(prompts)])
    pipeline = fit_estimator(x, np.array([0, 1, 0, 1]), EstimatorConfig())
    scorer = RiskScorer(
        make_probe(export_weights(pipeline), layers=(1,), fingerprint=engine.fingerprint)
    )
    generations = engine.generate(prompts, SamplingParams(max_new_tokens=3), risk_fn=scorer)
    assert [g.risk for g in generations] == pytest.approx(
        pipeline.predict_proba(x)[:, 1].tolist(), abs=1e-4
    )
