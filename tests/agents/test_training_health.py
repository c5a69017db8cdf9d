"""The collapse rule over an online-RL run's per-step logs (agents/training_health.py)."""

from __future__ import annotations

from agents.training_health import HealthRules, StepHealth, collapse, step_health

# rows as TRL's GRPOTrainer writes them to state.log_history
HISTORY = [
    {
        "step": 1,
        "loss": 0.02,
        "reward": 0.25,
        "reward_std": 0.4,
        "frac_reward_zero_std": 0.5,
        "entropy": 0.9,
        "clip_ratio/region_mean": 0.0,
        "completions/mean_length": 18.0,
    },
    {
        "step": 2,
        "loss": 0.01,
        "reward": 0.5,
        "reward_std": 0.5,
        "frac_reward_zero_std": 0.25,
        "entropy": 0.7,
        "clip_ratio/region_mean": 0.01,
        "completions/mean_length": 20.0,
    },
    {"step": 2, "train_runtime": 12.0, "train_loss": 0.015},
]


def test_the_training_steps_are_read_and_the_summary_row_skipped() -> None:
    steps = step_health(HISTORY)
    assert [s.step for s in steps] == [1, 2]
    assert steps[1] == StepHealth(2, 0.5, 0.5, 0.25, 0.7, 0.01, 20.0, 0.01)
    assert steps[0].to_json()["zero_std_share"] == 0.5


def test_a_healthy_run_is_no_collapse() -> None:
    assert collapse(step_health(HISTORY), dev_before=0.3, dev_after=0.35) is None
    assert collapse([], 0.3, 0.1) is None


def test_entropy_under_the_floor_is_a_collapse() -> None:
    steps = [*step_health(HISTORY), StepHealth(3, reward=0.6, entropy=0.02)]
    assert "entropy 0.020 at step 3" in (collapse(steps, 0.3, 0.35) or "")
    assert collapse(steps, 0.3, 0.35, HealthRules(min_entropy=0.01)) is None


def test_completions_blowing_up_is_a_collapse() -> None:
    steps = [*step_health(HISTORY), StepHealth(3, reward=0.6, entropy=0.5, completion_length=80.0)]
    assert "grew from 18 to 80 tokens" in (collapse(steps, 0.3, 0.35) or "")
    assert collapse(steps, 0.3, 0.35, HealthRules(max_length_growth=5.0)) is None


def test_reward_rising_while_dev_falls_is_a_collapse() -> None:
    steps = step_health(HISTORY)
    assert "while dev accuracy fell 30.0% -> 25.0%" in (collapse(steps, 0.3, 0.25) or "")
    assert collapse(steps, 0.3, 0.3) is None
    assert collapse(steps, None, 0.25) is None
