"""Online RL inside the session graph, on the tiny model. GRPO: optimize trains on the
groups acquire sampled (no second generation), select counts the groups worth training on,
the run's per-step health reaches the state and the trace, a cycle whose groups all got
equal rewards skips optimize, and warm-up cycles train with SFT first. Learnability: acquire chooses prompts by their pass-rate
posteriors, with every earlier cycle's verdicts as evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import open_store
from tests.session_support import odd_length, run_with_verifier


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as opened:
        yield opened


GRPO = {
    "optimize.method": "grpo",
    "acquire.samples_per_prompt": "4",
    "monitor.max_cycles": "1",
}


def test_a_grpo_session_trains_on_the_sampled_groups(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_with_verifier(store, odd_length, "grpo", **GRPO)
    (selected,) = [e for e in events if e.node == "select" and e.data.get("groups") is not None]
    assert selected.data["groups"] >= 1, "odd-length answers differ inside a group"
    (trained,) = [e for e in events if e.node == "optimize" and e.kind == "node_end"]
    assert trained.data["groups"] == selected.data["groups"], "one group per informative prompt"
    assert trained.data["examples"] == 4 * trained.data["groups"], "K completions per group"
    assert trained.data["steps"] >= 1 and trained.data["step_logs"]
    assert {"reward", "reward_std", "entropy"} <= set(trained.data["step_logs"][0])
    assert state["train"]["method"] == "grpo"
    assert state["train_steps"] == trained.data["step_logs"], "the monitor reads the run's health"
    version = Path(store.root) / "sessions/grpo/versions/v1/merged"
    assert (version / "config.json").is_file(), "the candidate was written like an SFT one"
    assert state["history"][-1].version == "v1", "and evaluated on dev"
    from views.report_html import write_session_report

    report = write_session_report(store, "grpo").read_text()
    assert "Training health (GRPO)" in report, "the run's steps are in the report"


def test_groups_with_equal_rewards_skip_optimize(store) -> None:  # type: ignore[no-untyped-def]
    never = lambda _answer, _refs: False  # noqa: E731 (every reward 0: no advantage anywhere)
    _, events = run_with_verifier(store, never, "equal", **GRPO)
    (selected,) = [e for e in events if e.node == "select" and e.data.get("groups") is not None]
    assert selected.data["groups"] == 0
    notes = " ".join(e.message for e in events if e.node == "select")
    assert "too little data (0 < select.min_examples): no training this cycle" in notes
    assert not [e for e in events if e.node == "optimize"], "no training without an advantage"


def test_learnability_order_draws_by_what_earlier_samples_showed(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_with_verifier(
        store,
        odd_length,
        "learn",
        **{"acquire.order": "learnability", "monitor.max_cycles": "2", "monitor.patience": "3"},
    )
    notes = [e.message for e in events if e.node == "acquire" and "learnability:" in e.message]
    assert len(notes) == state["cycle"] == 2, "each cycle chose by the posterior"
    assert "0 earlier groups as evidence" in notes[0]
    assert "8 earlier groups as evidence" in notes[1], "cycle 2 read cycle 1's verdicts"
    assert state["drawn_by"][0] == "v0" and len(state["drawn_by"]) == 2
    for metrics in state["history"][1:]:
        assert metrics.predicted_mixed_share is not None and 0 <= metrics.predicted_mixed_share <= 1
        assert metrics.mixed_share is not None


def test_grpo_warm_up_cycles_train_with_sft_first(store) -> None:  # type: ignore[no-untyped-def]
    sets = GRPO | {
        "optimize.grpo_warmup_cycles": "1",
        "monitor.max_cycles": "2",
        "monitor.patience": "3",
        "monitor.regression_tolerance": "1.0",  # both cycles train, whatever dev says
    }
    state, events = run_with_verifier(store, odd_length, "warm", **sets)
    trained = [e for e in events if e.node == "optimize" and e.kind == "node_end"]
    assert len(trained) == 2
    assert "step_logs" not in trained[0].data, "cycle 1: SFT on select's examples"
    assert trained[1].data["groups"] >= 1 and trained[1].data["step_logs"], "cycle 2: GRPO"
    plans = [e.message for e in events if e.node == "optimize" and "optimize plan" in e.message]
    assert "GRPO's warm-up (cycle 1 of 1): sft" in plans[0]
    assert state["train"]["method"] == "grpo"
