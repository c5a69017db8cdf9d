"""Pass-rate probes: soft labels, the one-class wait, and a probe that learns a signal."""

from __future__ import annotations

import numpy as np
import pytest

from probes.artifact import load_probe
from probes.features import FeatureSet
from probes.passrate import PassRateRows, concordance, fit_pass_rate_probe
from probes.runtime import RiskScorer


def rows_with_signal(n: int = 120, k: int = 4, seed: int = 0) -> PassRateRows:
    """Layer 2's first coordinate sets each prompt's pass rate; the other layers are noise."""
    rng = np.random.default_rng(seed)
    arrays = rng.standard_normal((n, 4, 8))  # (N, L+1, H)
    p_wrong = 1 / (1 + np.exp(-2.5 * arrays[:, 2, 0]))  # (N,)
    wrong = rng.binomial(k, p_wrong) / k  # (N,) share of K samples wrong
    features = FeatureSet(
        [f"i{i}" for i in range(n)], {"query_token": arrays}, "fp", "tmpl", "tiny"
    )
    return PassRateRows(
        features, wrong, [f"g{i}" for i in range(n)], task="t", samples_per_prompt=k
    )


def test_a_soft_label_probe_finds_the_layer_that_carries_the_pass_rate(tmp_path) -> None:
    rows = rows_with_signal()
    fitted = fit_pass_rate_probe(rows, seed=1)
    assert fitted.chosen.spec.layers == (2,)
    assert fitted.held_out_concordance is not None and fitted.held_out_concordance > 0.7
    # saved and reloaded, it scores prompts like any probe, in [0, 1], ordered by the signal
    scorer = RiskScorer(load_probe(fitted.probe.save(tmp_path / "probe")))
    risks = scorer.score(rows.features.arrays["query_token"][:, 2, :])
    assert ((risks >= 0) & (risks <= 1)).all()
    assert concordance(rows.wrong_share, risks) > 0.7


def test_soft_labels_fit_where_greedy_labels_would_be_one_class() -> None:
    """Every prompt mostly wrong (no prompt's majority right): soft labels still fit."""
    rows = rows_with_signal()
    mostly_wrong = np.clip(rows.wrong_share, 0.75, 1.0)  # shares 0.75 or 1.0
    rows = PassRateRows(rows.features, mostly_wrong, rows.groups, task="t", samples_per_prompt=4)
    assert rows.problem(1) is None
    assert fit_pass_rate_probe(rows, seed=1).right_samples > 0


def test_all_wrong_samples_wait_and_say_how_many_of_each() -> None:
    rows = rows_with_signal(n=30)
    all_wrong = PassRateRows(
        rows.features, np.ones(30), rows.groups, task="t", samples_per_prompt=4
    )
    assert all_wrong.problem(1) == (
        "30 prompts, 0 right and 120 wrong samples: waiting for both right and wrong samples"
    )
    with pytest.raises(ValueError, match="0 right and 120 wrong"):
        fit_pass_rate_probe(all_wrong, seed=1)


def test_too_few_prompts_to_split_are_refused_with_the_counts() -> None:
    rows = rows_with_signal(n=3)
    few = PassRateRows(
        rows.features, np.array([0.0, 0.5, 1.0]), rows.groups, task="t", samples_per_prompt=4
    )
    problem = few.problem(1)
    assert problem is not None and problem.startswith("3 prompts, 6 right and 6 wrong samples")


def test_rows_must_align() -> None:
    rows = rows_with_signal(n=5)
    with pytest.raises(ValueError, match="must align"):
        PassRateRows(rows.features, np.ones(4), rows.groups, task="t", samples_per_prompt=4)


def test_a_single_prompt_with_right_samples_still_gets_a_probe() -> None:
    """One prompt of 40 has a right sample: some split seed puts it in the train rows."""
    rows = rows_with_signal(n=40)
    share = np.ones(40)
    share[7] = 0.75
    few_right = PassRateRows(rows.features, share, rows.groups, task="t", samples_per_prompt=4)
    fitted = fit_pass_rate_probe(few_right, seed=1)
    assert fitted.right_samples == 1
    assert 7 in few_right.split(fitted.probe.card.split.seed).train


def test_a_feature_equal_for_every_prompt_is_never_chosen() -> None:
    """Layer 0's query token is the chat template's last token embedding, the same for every
    prompt: it can only predict the base rate, so on noise it would win on log loss and
    rank every prompt alike (AUROC exactly 0.5). It is left out of the candidates."""
    rng = np.random.default_rng(3)
    arrays = rng.standard_normal((40, 4, 8))  # (N, L+1, H): no signal anywhere
    arrays[:, 0, :] = 0.25  # layer 0 identical for every prompt
    features = FeatureSet([f"i{i}" for i in range(40)], {"query_token": arrays}, "fp", "t", "m")
    wrong = rng.binomial(4, 0.8, size=40) / 4
    rows = PassRateRows(
        features, wrong, [f"g{i}" for i in range(40)], task="t", samples_per_prompt=4
    )
    for seed in range(3):
        fitted = fit_pass_rate_probe(rows, seed=seed)
        assert fitted.chosen.spec.layers != (0,)


def test_a_refit_chooses_refine_thresholds_on_its_own_validation_rows(tmp_path) -> None:
    # The thresholds come from the refit's validation rows (each counted right by its pass
    # rate), not the defaults or the previous probe's: answering at risk <= low reaches the
    # target precision there, and low is the highest such cut-off.
    from agents.probe import refit_from_samples

    rows = rows_with_signal(n=200)
    fitted = refit_from_samples(rows, name="p", folder=tmp_path / "p", seed=0, target_precision=0.8)
    fit = fit_pass_rate_probe(rows, seed=1)
    risk, passed = fit.validation_risk, fit.validation_pass_rate
    low = fitted.thresholds.low
    assert passed[risk <= low].mean() >= 0.8
    above = np.sort(risk[risk > low])
    if len(above):  # answering one more row would fall below the target
        assert passed[risk <= above[0]].mean() < 0.8
    assert fitted.thresholds.high >= low
