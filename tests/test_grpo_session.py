"""GRPO inside the session graph, on the tiny model: optimize trains on the groups acquire
sampled (no second generation), select counts the groups worth training on, the run's
per-step health reaches the state and the trace, and a cycle whose groups all got equal
rewards skips optimize."""

from __future__ import annotations

from pathlib import Path

from tests.test_graph import odd_length, run_with_verifier, store  # noqa: F401 (fixture)

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


def test_groups_with_equal_rewards_skip_optimize(store) -> None:  # type: ignore[no-untyped-def]
    never = lambda _answer, _refs: False  # noqa: E731 (every reward 0: no advantage anywhere)
    state, events = run_with_verifier(store, never, "equal", **GRPO)
    (selected,) = [e for e in events if e.node == "select" and e.data.get("groups") is not None]
    assert selected.data["groups"] == 0
    notes = " ".join(e.message for e in events if e.node == "select")
    assert "too little data (0 < select.min_examples): no training this cycle" in notes
    assert not [e for e in events if e.node == "optimize"], "no training without an advantage"
