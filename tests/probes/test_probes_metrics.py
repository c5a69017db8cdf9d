"""Probe metrics and calibration against hand-computed cases and scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, roc_auc_score

import probes.calibration
from probes.calibration import fit_calibrator, sigmoid
from probes.metrics import (
    accuracy_at_coverage,
    auprc,
    aurc,
    auroc,
    auroc_drop_is_clear,
    auroc_standard_error,
    bootstrap_ci,
    cumulative_errors,
    expected_calibration_error,
    risk_metrics,
)


def test_hand_computed_case() -> None:
    # Sorted by risk: 0.1 (right), 0.2 (right), 0.3 (wrong), 0.4 (wrong), 0.9 (right), 0.95 (wrong)
    y = [0, 0, 1, 1, 0, 1]
    risk = [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    # Pairs (wrong, right) ranked correctly: 0.3 > {0.1, 0.2}; 0.4 > {0.1, 0.2}; 0.95 > all 3
    assert auroc(y, risk) == pytest.approx(7 / 9)
    # From the top: 0.95 hit (P=1, R=1/3), 0.9 miss, 0.4 hit (P=2/3, R=2/3), 0.3 hit (P=3/4, R=1)
    assert auprc(y, risk) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Errors among the k lowest: 0, 0, 1, 2, 2, 3 -> risks 0, 0, 1/3, 1/2, 2/5, 1/2
    assert aurc(y, risk) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2 + 2 / 5 + 1 / 2) / 6)
    assert accuracy_at_coverage(y, risk, 0.5) == pytest.approx(2 / 3)  # 3 items, 1 wrong
    assert accuracy_at_coverage(y, risk, 0.8) == pytest.approx(3 / 5)  # ceil(4.8) = 5, 2 wrong
    assert accuracy_at_coverage(y, risk, 1.0) == pytest.approx(1 / 2)


def test_ece_hand_computed() -> None:
    # Bin [0.1, 0.2): p 0.1, 0.1 -> observed 1/2, gap 0.4; bin [0.7, 0.8): p 0.75 x 2, observed 1
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.75, 0.75]) == pytest.approx(
        (2 * 0.4 + 2 * 0.25) / 4
    )
    assert expected_calibration_error([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0]) == 0.0


def test_auroc_and_auprc_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        risk = rng.integers(0, 8, 60) / 8  # many ties
        assert auroc(y, risk) == pytest.approx(roc_auc_score(y, risk))
        assert auprc(y, risk) == pytest.approx(average_precision_score(y, risk))


def test_ties_in_risk_coverage_are_the_mean_over_orders() -> None:
    y = np.array([1, 0, 1, 0, 0, 1])
    risk = np.array([0.2, 0.2, 0.2, 0.5, 0.7, 0.7])
    expected = np.zeros(len(y))
    orders = 0
    for first in itertools.permutations([0, 1, 2]):
        for last in itertools.permutations([4, 5]):
            order = [*first, 3, *last]
            expected += np.cumsum(y[order])
            orders += 1
    np.testing.assert_allclose(cumulative_errors(y, risk), expected / orders)


def test_constant_risk_gives_chance_everywhere() -> None:
    y = [1, 0, 0, 1, 1]
    risk = [0.3] * 5
    assert auroc(y, risk) == 0.5
    assert aurc(y, risk) == pytest.approx(0.6)
    assert accuracy_at_coverage(y, risk, 0.5) == pytest.approx(0.4)


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    risk = y + rng.normal(0, 1.0, 200)
    low, high = bootstrap_ci(y, risk, n_boot=500, seed=3)
    assert 0.0 <= low < auroc(y, risk) < high <= 1.0
    assert bootstrap_ci(y, risk, n_boot=500, seed=3) == (low, high)
    assert high - low < 0.2


def test_one_class_is_undefined_not_an_error() -> None:
    assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(auprc([0, 0], [0.1, 0.2]))
    metrics = risk_metrics([1, 1, 1], [0.1, 0.2, 0.3], n_boot=10)
    assert math.isnan(metrics.auroc) and metrics.aurc == 1.0


def test_labels_must_be_binary() -> None:
    with pytest.raises(ValueError, match="0 \\(right\\) or 1"):
        auroc([0, 2], [0.1, 0.2])


def test_platt_recovers_a_logistic_relation() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(0.5 * z - 1.0)).astype(int)
    calibrator = fit_calibrator(z, y, "platt")
    assert calibrator.a == pytest.approx(0.5, abs=0.05)
    assert calibrator.b == pytest.approx(-1.0, abs=0.07)
    assert expected_calibration_error(y, calibrator(z)) < 0.02


def test_platt_on_a_separable_validation_split_keeps_risks_apart() -> None:
    # 17 validation rows, 4 wrong, the probe's logits separate them perfectly: an
    # unregularized fit sends the slope to infinity and test risks to exactly 0 or 1, which
    # tie and leave a gate no cut-off to choose. Platt's smoothed targets keep it finite.
    z = np.concatenate([np.linspace(-3, -0.5, 13), np.linspace(0.5, 3, 4)])
    y = np.array([0] * 13 + [1] * 4)
    calibrator = fit_calibrator(z, y, "platt")
    risks = calibrator(np.linspace(-8, 8, 9))
    assert 0.0 < calibrator.a < 20.0
    assert np.all(np.diff(risks) > 0)  # every test logit keeps its own rank
    assert risks.min() > 0.0 and risks.max() < 1.0


def test_isotonic_matches_sklearn_and_is_monotone() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, 300)
    y = (rng.random(300) < sigmoid(2 * z)).astype(int)
    calibrator = fit_calibrator(z, y, "isotonic")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(z, y)
    grid = np.linspace(-4, 4, 101)
    np.testing.assert_allclose(calibrator(grid), reference.predict(grid), atol=1e-12)
    assert np.all(np.diff(calibrator(grid)) >= 0)


def test_calibrator_json_round_trip() -> None:
    for calibrator in (
        fit_calibrator([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1], "platt"),
        fit_calibrator([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1], "isotonic"),
        fit_calibrator([0.0, 1.0], [0, 1], "none"),
    ):
        again = probes.calibration.Calibrator.from_json(calibrator.to_json())
        np.testing.assert_allclose(again([-1.0, 0.5, 4.0]), calibrator([-1.0, 0.5, 4.0]))


def test_an_auroc_drop_counts_only_beyond_the_noise_of_both_measurements() -> None:
    """Issue 24 item 4: 'AUROC 0.89 on fresh labels vs 1.00 at fit' on 12 held-out rows is
    noise; the same drop measured on hundreds of rows is not."""
    assert not auroc_drop_is_clear((1.00, 6, 6), (0.89, 40, 40))
    assert auroc_drop_is_clear((1.00, 300, 300), (0.89, 300, 300))
    assert not auroc_drop_is_clear((0.70, 50, 50), (0.75, 50, 50))  # a rise is never a drop
    assert auroc_standard_error(0.8, 0, 10) == float("inf")
    assert auroc_standard_error(0.8, 40, 40) < auroc_standard_error(0.8, 10, 10)
