"""Training health of an online-RL run, read from the trainer's per-step logs (issue 24,
item 5): what the monitor reads besides dev accuracy, and the collapse rule.

TRL's `GRPOTrainer` logs, per optimizer step, `reward` (mean) and `reward_std`,
`frac_reward_zero_std` (groups whose rewards are all equal), `entropy` (mean token entropy
of the completions), `clip_ratio/region_mean` and `completions/mean_length`; its
`state.log_history` is a list of such dicts (with `step`, `loss`, and the rows that are not
training steps, e.g. the run's summary). `step_health` keeps the training steps;
`collapse` tells a run that broke from one that merely did not help:

- entropy under `min_entropy` at the last step (the policy became near-deterministic);
- the mean completion length grew by more than `max_length_growth` times its first step's
  (answers blowing up, e.g. repetition until the token budget);
- the reward rose while dev accuracy fell (the policy learned the reward, not the task).

Pure: the caller hands in the log history and the dev accuracies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LOG_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "zero_std_share": "frac_reward_zero_std",
    "entropy": "entropy",
    "clip_ratio": "clip_ratio/region_mean",
    "completion_length": "completions/mean_length",
}


@dataclass(frozen=True)
class StepHealth:
    """One optimizer step's health (None where the trainer did not log it)."""

    step: int
    reward: float | None = None
    reward_std: float | None = None
    zero_std_share: float | None = None
    entropy: float | None = None
    clip_ratio: float | None = None
    completion_length: float | None = None
    loss: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def step_health(log_history: Sequence[Mapping[str, Any]]) -> list[StepHealth]:
    """The training steps of a trainer's log history, in order.

    >>> rows = [{"step": 1, "loss": 0.1, "reward": 0.5, "entropy": 0.9},
    ...         {"step": 1, "train_runtime": 3.0}]
    >>> step_health(rows)
    [StepHealth(step=1, reward=0.5, reward_std=None, zero_std_share=None, entropy=0.9, clip_ratio=None, completion_length=None, loss=0.1)]
    """
    steps = []
    for row in log_history:
        if "reward" not in row and "loss" not in row:
            continue  # the run's summary row, or an evaluation row
        values = {name: _number(row.get(key)) for name, key in LOG_KEYS.items()}
        steps.append(
            StepHealth(step=int(row.get("step", 0)), loss=_number(row.get("loss")), **values)
        )
    return steps


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class HealthRules:
    """The collapse rule's thresholds (the monitor's policy holds the values)."""

    min_entropy: float = 0.05
    max_length_growth: float = 3.0


def collapse(
    steps: Sequence[StepHealth],
    dev_before: float | None,
    dev_after: float | None,
    rules: HealthRules = HealthRules(),
) -> str | None:
    """Why the run collapsed, or None when it did not.

    >>> steps = [StepHealth(1, reward=0.2, entropy=0.8, completion_length=20.0),
    ...          StepHealth(2, reward=0.6, entropy=0.01, completion_length=22.0)]
    >>> collapse(steps, 0.4, 0.45)
    'entropy 0.010 at step 2 is under the floor 0.05'
    >>> collapse(steps[:1], 0.4, 0.45) is None
    True
    """
    if not steps:
        return None
    first, last = steps[0], steps[-1]
    if last.entropy is not None and last.entropy < rules.min_entropy:
        return f"entropy {last.entropy:.3f} at step {last.step} is under the floor {rules.min_entropy:g}"
    if (
        first.completion_length
        and last.completion_length is not None
        and last.completion_length > rules.max_length_growth * first.completion_length
    ):
        return (
            f"completion length grew from {first.completion_length:.0f} to "
            f"{last.completion_length:.0f} tokens (over {rules.max_length_growth:g}x)"
        )
    rising = first.reward is not None and last.reward is not None and last.reward > first.reward
    if rising and dev_before is not None and dev_after is not None and dev_after < dev_before:
        return (
            f"reward rose {first.reward:.2f} -> {last.reward:.2f} while dev accuracy fell "
            f"{dev_before:.1%} -> {dev_after:.1%}"
        )
    return None
