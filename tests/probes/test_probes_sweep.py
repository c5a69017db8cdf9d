"""Collect, sweep and evaluate on a scripted engine with a planted signal."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from probes.artifact import StaleProbeError, load_probe
from probes.data import ProbeData, collect, sample_consistency
from probes.evaluation import evaluate, held_out_items, score_prompts
from probes.features import FeatureSpec
from probes.fit import EstimatorConfig
from probes.labels import Label, label_array, usable
from probes.metrics import auroc_and_ece
from probes.plots import plot_roc, plot_sweep
from probes.runtime import RiskScorer
from probes.split import grouped_split
from probes.sweep import SweepRefusedError, sweep
from tasks.base import Task
from tests.probe_fakes import FakeEngine, toy_task


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine(
        num_layers=5, hidden=8, signal_layer=3, signal_kind="query_token", truncate_every=12
    )


@pytest.fixture(scope="module")
def data(engine: FakeEngine) -> ProbeData:
    return collect(engine, toy_task(400, items_per_group=2), batch_size=64)


def test_collect_batches_greedy_generation_with_capture(
    engine: FakeEngine, data: ProbeData
) -> None:
    engine.calls.clear()
    progress: list[tuple[int, int]] = []
    collected = collect(
        engine, toy_task(100), batch_size=32, progress_cb=lambda d, t: progress.append((d, t))
    )
    assert engine.calls == [(32, 1, 0.0), (32, 1, 0.0), (32, 1, 0.0), (4, 1, 0.0)]
    assert progress[-1] == (100, 100)
    assert collected.features.arrays["query_token"].shape == (100, 6, 8)
    assert collected.features.fingerprint == engine.fingerprint
    assert {"greedy_generation", "prefill_only"} <= set(collected.timing)
    assert len(data) == 400 and data.item_ids[0] == "toy-0000"


def test_sweep_picks_the_planted_layer_and_kind(data: ProbeData) -> None:
    result = sweep(data)
    assert result.chosen.spec.name == "layer.3.query_token"
    assert result.chosen.val_auroc > 0.85
    assert result.validation.auroc == pytest.approx(result.chosen.val_auroc)
    assert len(result.rows) == 2 * 6  # kinds x (L+1) layers
    others = [row.val_auroc for row in result.rows if row is not result.chosen]
    assert max(others) < 0.75
    card = result.probe.card
    assert card.layers == [3] and card.feature_kind == "query_token" and card.task == "toy"
    assert card.split.sizes == result.split_sizes and card.metrics["validation"]["auroc"] > 0.85
    assert card.calibration["method"] == "platt"


def test_truncated_answers_are_reported_and_left_out_of_fitting(data: ProbeData) -> None:
    result = sweep(data)
    truncated = sum(label.truncated for label in data.labels)
    assert truncated > 10
    assert result.labels.truncated == truncated
    assert sum(result.split_sizes.values()) == len(data) - truncated
    included = sweep(data, include_truncated=True)
    assert sum(included.split_sizes.values()) == len(data)


def _with_test_labels(data: ProbeData, new: dict[int, int]) -> ProbeData:
    labels = [
        Label(label.item_id, new.get(row, label.wrong), label.finish_reason, label.answer)
        for row, label in enumerate(data.labels)
    ]
    return replace(data, labels=labels)


@pytest.mark.parametrize(
    "estimator", [EstimatorConfig(), EstimatorConfig("mlp", hidden=(8,), max_iter=200)]
)
def test_layer_selection_never_reads_test_labels(
    data: ProbeData, estimator: EstimatorConfig
) -> None:
    test_rows = grouped_split(data.groups, seed=0).test
    rng = np.random.default_rng(0)
    y = np.array([label.wrong for label in data.labels])
    shuffled = dict(zip(test_rows.tolist(), rng.permutation(y[test_rows]).tolist(), strict=True))
    flipped = {int(row): 1 - int(y[row]) for row in test_rows}
    constant = {int(row): 1 for row in test_rows}
    original = sweep(data, estimators=[estimator], layers=[1, 2, 3, 4])
    for new in (shuffled, flipped, constant):
        again = sweep(_with_test_labels(data, new), estimators=[estimator], layers=[1, 2, 3, 4])
        assert again.chosen.spec == original.chosen.spec
        assert again.table() == original.table()
        np.testing.assert_array_equal(
            again.probe.weights["scaler.mean"], original.probe.weights["scaler.mean"]
        )


def test_concatenated_layers_and_the_mlp_are_candidates(data: ProbeData) -> None:
    result = sweep(
        data,
        kinds=["query_token"],
        layers=[0, 1],
        concat=[(1, 3)],
        estimators=[EstimatorConfig(), EstimatorConfig("mlp", hidden=(8,), max_iter=300)],
    )
    assert len(result.rows) == 3 * 2
    assert result.chosen.spec.layers == (1, 3)
    assert result.probe.card.input_dim == 16


def test_evaluate_scores_the_test_split_with_baselines(
    engine: FakeEngine, data: ProbeData, tmp_path: Path
) -> None:
    result = sweep(data)
    test_rows = grouped_split(data.groups, seed=0).test
    engine.calls.clear()
    sampled = sample_consistency(engine, data, k=4, temperature=0.8, rows=test_rows.tolist())
    assert {(n, temperature) for _, n, temperature in engine.calls} == {(4, 0.8)}
    assert {item: len(answers) for item, answers in sampled.consistency.items()} == {
        data.item_ids[row]: 4 for row in test_rows
    }
    assert "self_consistency" in sampled.timing and not data.consistency
    report = evaluate(result.probe, sampled, n_boot=200)
    usable_test = [row for row in test_rows if not data.labels[row].truncated]
    assert report.n_test == len(usable_test)
    assert set(report.methods) == {"probe", "mean_logprob", "mean_entropy", "self_consistency"}
    assert report.methods["probe"].auroc > 0.85
    assert report.methods["mean_logprob"].auroc > 0.85  # the fake's logprobs carry the signal too
    assert report.methods["probe"].ece is not None and report.methods["mean_logprob"].ece is None
    low, high = report.methods["probe"].auroc_ci
    assert low <= report.methods["probe"].auroc <= high
    assert {"probe", "probe_in_generation", "mean_logprob", "self_consistency"} <= set(
        report.cost_s_per_item
    )
    assert report.labels.truncated == sum(data.labels[row].truncated for row in test_rows)
    assert plot_roc(report, tmp_path / "roc.png").stat().st_size > 1000
    assert plot_sweep(result, tmp_path / "sweep.png").stat().st_size > 1000
    without = evaluate(result.probe, data, n_boot=50)
    assert "self_consistency" not in without.methods


def test_evaluate_on_re_collected_test_items_alone(engine: FakeEngine, data: ProbeData) -> None:
    task = toy_task(400, items_per_group=2)
    result = sweep(data)
    items = held_out_items(task, result.probe)
    test_rows = grouped_split(data.groups, seed=0).test
    assert [item.id for item in items] == [data.item_ids[row] for row in test_rows]
    fresh = collect(engine, task, items)
    assert evaluate(result.probe, fresh, n_boot=50).methods["probe"].auroc == pytest.approx(
        evaluate(result.probe, data, n_boot=50).methods["probe"].auroc
    )


def test_a_probe_refuses_data_from_another_model(data: ProbeData) -> None:
    probe = sweep(data).probe
    other = collect(FakeEngine(fingerprint="updated-model"), toy_task(50))
    with pytest.raises(StaleProbeError, match="updated-model"):
        evaluate(probe, other)
    with pytest.raises(StaleProbeError):
        score_prompts(
            FakeEngine(fingerprint="updated-model"), probe, ["What is the capital of C1?"]
        )


def test_probe_data_and_probe_round_trip(
    engine: FakeEngine, data: ProbeData, tmp_path: Path
) -> None:
    sampled = sample_consistency(engine, data, k=3, rows=[0, 1, 2])
    sampled.save(tmp_path / "data")
    loaded = ProbeData.load(tmp_path / "data")
    assert loaded.labels == sampled.labels and loaded.groups == sampled.groups
    assert loaded.consistency == sampled.consistency and len(loaded.consistency) == 3
    np.testing.assert_array_equal(loaded.mean_logprob, sampled.mean_logprob)
    result = sweep(loaded)
    assert result.table() == sweep(data).table()
    folder = result.probe.save(tmp_path / "probe")
    probe = load_probe(folder, expected_fingerprint=engine.fingerprint)
    prompts = data.prompts[:5]
    assert score_prompts(engine, probe, prompts) == pytest.approx(
        RiskScorer(result.probe).score(data.features.matrix(result.chosen.spec)[:5]).tolist()
    )


def test_sweep_explains_a_split_with_one_class(engine: FakeEngine) -> None:
    tiny = collect(FakeEngine(know_rate=0.0), toy_task(30))
    with pytest.raises(SweepRefusedError, match="one class only"):  # what `probe sweep` catches
        sweep(tiny)


def test_sweep_reports_the_chosen_probe_on_validation_and_held_out_rows(data: ProbeData) -> None:
    """What the session's probe stage reads, bit for bit what scoring the saved probe gives."""
    result = sweep(data, seed=1, n_boot=20)
    split = grouped_split(data.groups, seed=1).restrict(usable(data.labels))
    scorer, y = RiskScorer(result.probe), label_array(data.labels)
    matrix = data.features.matrix(result.probe.spec)
    np.testing.assert_array_equal(result.validation_risks, scorer.score(matrix[split.validation]))
    np.testing.assert_array_equal(result.validation_wrong, y[split.validation])
    expected = auroc_and_ece(y[split.test], scorer.score(matrix[split.test]))
    assert (result.held_out_auroc, result.held_out_ece) == expected
    assert result.held_out_auroc is not None and result.held_out_auroc > 0.8
    assert result.n_held_out == len(split.test) == result.split_sizes["test"]
    no_test = sweep(data, layers=[3], fractions=(0.7, 0.3, 0.0), n_boot=20)
    assert (no_test.held_out_auroc, no_test.held_out_ece, no_test.n_held_out) == (None, None, 0)


def test_probe_data_subset_concat_and_relabel(engine: FakeEngine, data: ProbeData) -> None:
    sampled = sample_consistency(engine, data, k=2, rows=[0, 1, 2])
    part = sampled.subset([2, 0])
    assert part.item_ids == [data.item_ids[2], data.item_ids[0]]
    assert part.labels == [data.labels[2], data.labels[0]]
    np.testing.assert_array_equal(part.mean_entropy, data.mean_entropy[[2, 0]])
    np.testing.assert_array_equal(
        part.features.arrays["query_token"], data.features.arrays["query_token"][[2, 0]]
    )
    assert set(part.consistency) == set(part.item_ids)
    joined = ProbeData.concat([part, data.subset([5])], "joined")
    assert joined.task == "joined" and len(joined) == 3 and joined.timing == {}
    assert joined.item_ids == [*part.item_ids, data.item_ids[5]]
    assert joined.groups == [*part.groups, data.groups[5]]
    spec = FeatureSpec("query_token", (3,))
    np.testing.assert_array_equal(
        joined.features.matrix(spec), data.features.matrix(spec)[[2, 0, 5]]
    )
    with pytest.raises(ValueError, match="repeat"):
        ProbeData.concat([part, part], "twice")
    other = collect(FakeEngine(fingerprint="updated-model"), toy_task(5))
    with pytest.raises(ValueError, match="different models"):
        ProbeData.concat([part, other], "mixed")
    task = toy_task(400, items_per_group=2)
    assert data.relabeled(task).labels == data.labels
    strict = Task("toy", task.items, lambda answer, answers: False, "never", max_new_tokens=16)
    relabeled = data.relabeled(strict)
    assert {label.wrong for label in relabeled.labels} == {1}
    assert [(lab.finish_reason, lab.answer) for lab in relabeled.labels] == [
        (lab.finish_reason, lab.answer) for lab in data.labels
    ]
