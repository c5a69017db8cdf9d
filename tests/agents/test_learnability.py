"""Prompt choice by what the samples showed (agents/learnability.py): the probe's prior
weighs by its skill, old versions' evidence is discounted, prompts are ranked by expected
learnability, and the predicted share of mixed groups is what sampling gives."""

from __future__ import annotations

import random

import pytest

from agents.learnability import (
    Evidence,
    Posterior,
    choose,
    observed_mixed_share,
    posteriors,
    predicted_mixed_share,
    prior,
    prior_strength,
)


def test_a_probe_at_chance_or_absent_gives_the_flat_prior() -> None:
    for auroc in (None, 0.3, 0.5, float("nan")):
        found = posteriors(["a"], {"a": 0.9}, [], probe_auroc=auroc)
        assert found["a"] == Posterior(1.0, 1.0)


def test_a_skilled_probe_pulls_the_prior_towards_its_prediction_by_its_skill() -> None:
    weak = posteriors(["a"], {"a": 0.2}, [], probe_auroc=0.6)["a"]
    strong = posteriors(["a"], {"a": 0.2}, [], probe_auroc=0.9)["a"]
    assert 0.5 < weak.mean < strong.mean < 0.8  # both towards pass rate 0.8, the strong more
    assert weak.alpha + weak.beta < strong.alpha + strong.beta
    assert prior(0.2, prior_strength(0.9, 4.0)) == strong


def test_evidence_of_older_versions_counts_less() -> None:
    now = [Evidence("a", right=0, total=4, versions_ago=0)]
    before = [Evidence("a", right=0, total=4, versions_ago=2)]
    fresh = posteriors(["a"], {}, now, probe_auroc=None, discount=0.5)["a"]
    stale = posteriors(["a"], {}, before, probe_auroc=None, discount=0.5)["a"]
    assert fresh == Posterior(1.0, 5.0)
    assert stale == Posterior(1.0, 2.0)  # 4 wrong x 0.5^2
    with pytest.raises(ValueError, match="discount"):
        posteriors(["a"], {}, now, probe_auroc=None, discount=1.5)


def test_evidence_for_prompts_not_asked_about_is_ignored() -> None:
    found = posteriors(["a"], {}, [Evidence("z", 1, 4)], probe_auroc=None)
    assert list(found) == ["a"]


def test_prompts_whose_samples_agree_wait_and_unknown_or_mixed_ones_go_first() -> None:
    seen = [
        Evidence("solved", right=8, total=8),
        Evidence("unsolved", right=0, total=8),
        Evidence("mixed", right=4, total=8),
    ]
    found = posteriors(["solved", "unsolved", "mixed", "new"], {}, seen, probe_auroc=None)
    assert choose(found, 2) == ["mixed", "new"]
    assert set(choose(found, 4)[2:]) == {"solved", "unsolved"}
    assert choose(found, 0) == []


def test_thompson_draws_are_seeded_and_favour_learnable_prompts() -> None:
    found = {f"p{i}": Posterior(1.0 + i, 1.0 + i) for i in range(20)}  # all mean 0.5
    found["solved"] = Posterior(40.0, 1.0)
    assert choose(found, 5, order="thompson", seed=3) == choose(found, 5, order="thompson", seed=3)
    picks = [choose(found, 5, order="thompson", seed=s) for s in range(50)]
    assert sum("solved" in p for p in picks) == 0
    assert len({tuple(p) for p in picks}) > 1  # it explores


def test_the_predicted_mixed_share_is_what_sampling_gives() -> None:
    rng = random.Random(0)
    found = {"a": Posterior(2.0, 5.0), "b": Posterior(1.0, 1.0), "c": Posterior(6.0, 1.5)}
    k, draws = 4, 40_000
    for pid, post in found.items():
        mixed = 0
        for _ in range(draws):
            p = rng.betavariate(post.alpha, post.beta)
            right = sum(rng.random() < p for _ in range(k))
            mixed += 0 < right < k
        assert mixed / draws == pytest.approx(post.mixed_share(k), abs=0.01), pid
    assert predicted_mixed_share(found, ["a", "b"], k) == pytest.approx(
        (found["a"].mixed_share(k) + found["b"].mixed_share(k)) / 2
    )
    assert Posterior(3.0, 3.0).mixed_share(1) == 0.0


def test_the_observed_mixed_share_counts_groups_with_both_verdicts() -> None:
    assert observed_mixed_share([[True, True], [False, True], []]) == 0.5
    assert observed_mixed_share([]) == 0.0
