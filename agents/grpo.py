"""GRPO with verifiable rewards on the groups acquire already sampled: TRL's `GRPOTrainer`
(its loss, clipping and advantages) fed through its `rollout_func`, so the engine's own
token ids are trained on and nothing is generated a second time (the prefill states and
risks acquire captured stay the ones of these samples).

A group is one prompt and its K samples, each with a reward (`agents.rewards`). Groups whose
K rewards are all equal carry no advantage and only dilute a token-averaged loss: they are
dropped before training (`informative_groups`). The rest form one generation batch, as
acquire drew them with one model: TRL centres rewards per group, scales them
(`OptimizePolicy.grpo_scale_rewards`) and splits the batch into optimizer steps.

TRL 1.16 traps this module handles (a contract test builds the trainer and takes a step):
- its sampler hands `rollout_func` each prompt K times in a row, although the docstring says
  prompts come without duplication: `rollout` checks the blocks and fails loudly otherwise;
- the engine's logprobs are pre-temperature (and before top-p), TRL's are after: TRL gets
  `logprobs=None` and computes its own;
- the trainer's temperature must be acquire's: `GRPOSettings.temperature` has no default;
- `bf16` and `gradient_checkpointing` default to on, also on CPU: `_common_args` turns both
  off (fp32);
- the sampler drops a last chunk of prompts smaller than a generation batch: the generation
  batch is every kept group, so nothing is dropped;
- the trainer wraps the model with peft in place and patches its `forward` (a fused LM
  head): pass a copy, as for SFT;
- `rollout_func` is experimental: its warning is silenced here, TRL is pinned below 2 and
  the contract test fails when the API moves.

On a GPU with vLLM, TRL can also generate by itself (`use_vllm=True, vllm_mode="colocate"`:
vLLM shares the training GPU and gets the new weights every step), which makes GRPO fully
online; the session's groups then come from the trainer instead of acquire, and the probe's
prefill states of those samples are not captured. This module keeps acquire's samples.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents import optimize
from agents.acquire import Attempt
from agents.optimize import OptimizePolicy, StepFn, TrainResult, TrainSettings
from agents.rewards import DEFAULT_ABSTENTIONS, REWARDS, RewardName, judge
from tasks.base import Task

# what the step logs keep of TRL's `log_history` (all of them when it logs them)
STEP_KEYS = (
    "loss",
    "grad_norm",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "entropy",
    "kl",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "completions/mean_length",
    "completions/clipped_ratio",
)


@dataclass(frozen=True)
class Group:
    """One prompt, its K sampled completions (the engine's token ids, end token included)
    and each completion's reward."""

    prompt: str
    prompt_ids: tuple[int, ...]  # the prompt as the engine fed it (chat template applied)
    completions: tuple[tuple[int, ...], ...]
    rewards: tuple[float, ...]
    texts: tuple[str, ...] = ()  # the completions' texts, for reading
    item_id: str = ""

    def __post_init__(self) -> None:
        if len(self.completions) != len(self.rewards) or len(self.completions) < 2:
            raise ValueError(
                f"group {self.item_id or self.prompt!r}: {len(self.completions)} completions and "
                f"{len(self.rewards)} rewards; GRPO needs one reward per completion, 2 or more"
            )
        if not self.prompt_ids or not all(self.completions):
            raise ValueError(f"group {self.item_id or self.prompt!r} has an empty token sequence")

    @property
    def informative(self) -> bool:
        """Some completions scored differently: the group has an advantage to learn from."""
        return len(set(self.rewards)) > 1


def prompt_token_ids(tokenizer: Any, prompt: str, *, chat_template: bool = True) -> list[int]:
    """The ids the engines feed a prompt (`HFEngine._encode`): the tokenizer's chat
    template with the generation prompt, tokenized without special tokens added."""
    text = prompt
    if chat_template and tokenizer.chat_template is not None:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def groups_from_attempts(
    task: Task,
    attempts: Sequence[Attempt],
    tokenizer: Any,
    *,
    reward: RewardName,
    abstentions: Sequence[str] = DEFAULT_ABSTENTIONS,
) -> list[Group]:
    """Each attempt as a group: its samples' token ids and their `reward` (judged with the
    task's verifier and `abstentions`, the policy's `refine.abstentions`)."""
    return [
        Group(
            prompt=a.item.prompt,
            prompt_ids=tuple(prompt_token_ids(tokenizer, a.item.prompt)),
            completions=tuple(tuple(s.token_ids) for s in a.samples),
            rewards=attempt_rewards(task, a, reward, abstentions),
            texts=tuple(s.text for s in a.samples),
            item_id=a.item.id,
        )
        for a in attempts
    ]


def attempt_rewards(
    task: Task, attempt: Attempt, reward: RewardName, abstentions: Sequence[str]
) -> tuple[float, ...]:
    """Each of the attempt's samples scored by `reward`."""
    score = REWARDS[reward]
    return tuple(score(judge(task, attempt.item, s, abstentions)) for s in attempt.samples)


def informative_prompts(
    task: Task, attempts: Sequence[Attempt], reward: RewardName, abstentions: Sequence[str]
) -> int:
    """How many distinct prompts have samples that `reward` scores differently: the
    groups GRPO would train on (what select counts before optimize is worth running)."""
    return len(
        {
            a.item.prompt
            for a in attempts
            if len(a.samples) > 1 and len(set(attempt_rewards(task, a, reward, abstentions))) > 1
        }
    )


@dataclass(frozen=True)
class GroupSplit:
    kept: list[Group]
    equal_rewards: int  # groups dropped: all K rewards equal (no advantage)
    repeated: int  # groups dropped: their prompt was already kept

    @property
    def zero_std_share(self) -> float:
        """Share of the groups offered whose rewards were all equal."""
        total = len(self.kept) + self.equal_rewards + self.repeated
        return self.equal_rewards / total if total else 0.0


def informative_groups(groups: Sequence[Group]) -> GroupSplit:
    """The groups worth training on: those whose rewards differ, one per prompt (TRL hands
    the rollout prompts, not rows, so a prompt names one group).

    >>> g = lambda p, *r: Group(p, (1,), tuple((2,) for _ in r), r)
    >>> split = informative_groups([g("a", 1, 0), g("b", 0, 0), g("a", 0, 1), g("c", -1, -1)])
    >>> [x.prompt for x in split.kept], split.equal_rewards, split.repeated, split.zero_std_share
    (['a'], 2, 1, 0.5)
    """
    kept: dict[str, Group] = {}
    equal = repeated = 0
    for group in groups:
        if not group.informative:
            equal += 1
        elif group.prompt in kept:
            repeated += 1
        else:
            kept[group.prompt] = group
    return GroupSplit(list(kept.values()), equal, repeated)


@dataclass(frozen=True)
class GRPOSettings:
    """The GRPO part of a run's settings (`OptimizePolicy.grpo_*`) and acquire's sampling
    temperature, which TRL must divide the logits by to score the samples acquire drew."""

    temperature: float
    reward: RewardName = "verifier"
    scale_rewards: Literal["group", "batch", "none"] = "batch"
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    beta: float = 0.0
    iterations: int = 1
    epsilon: float = 0.2

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(
                f"GRPO needs acquire's sampling temperature (> 0), got {self.temperature}: "
                "greedy samples have no policy gradient; set acquire.temperature > 0"
            )

    @classmethod
    def from_policy(cls, policy: OptimizePolicy, *, temperature: float) -> GRPOSettings:
        return cls(
            temperature=temperature,
            reward=policy.grpo_reward,
            scale_rewards=policy.grpo_scale_rewards,
            loss_type=policy.grpo_loss_type,
            beta=policy.grpo_beta,
            iterations=policy.grpo_iterations,
            epsilon=policy.grpo_epsilon,
        )


def step_batch(completions: int, batch_size: int) -> int:
    """Completions per optimizer step: the divisor of `completions` nearest `batch_size`
    (smaller on a tie), so every step holds as many and none is left out.

    >>> step_batch(76, 16), step_batch(64, 16), step_batch(8, 16), step_batch(7, 2)
    (19, 16, 8, 1)
    """
    divisors = [d for d in range(1, completions + 1) if completions % d == 0]
    return min(divisors, key=lambda d: (abs(d - batch_size), d))


def planned_grpo_steps(groups: Sequence[Group], settings: TrainSettings, grpo: GRPOSettings) -> int:
    """Optimizer steps of a run on `groups` (already the informative ones).

    >>> groups = [Group(str(i), (1,), ((2,),) * 4, (1, 0, 0, 0)) for i in range(19)]
    >>> s = TrainSettings.from_policy(OptimizePolicy(method="grpo"), seed=0)
    >>> planned_grpo_steps(groups, s, GRPOSettings(temperature=0.8, iterations=2))
    8
    """
    completions = sum(len(g.completions) for g in groups)
    steps = completions // step_batch(completions, settings.batch_size) * grpo.iterations
    return min(steps, settings.max_steps) if settings.max_steps > 0 else steps


RolloutFunc = Callable[[list[Any], Any], dict[str, Any]]


def rollout(groups: Sequence[Group]) -> RolloutFunc:
    """TRL's `rollout_func` over groups already sampled: for each prompt TRL asks for (K
    times in a row, as its sampler repeats them) the group's K completions in order, with
    their rewards as the extra field `reward` (read by `precomputed_reward`)."""
    by_prompt = {g.prompt: g for g in groups}
    k = len(groups[0].completions)

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        prompt_ids: list[list[int]] = []
        completion_ids: list[list[int]] = []
        rewards: list[float] = []
        for start in range(0, len(prompts), k):
            block = prompts[start : start + k]
            if len(block) != k or any(p != block[0] for p in block):
                raise RuntimeError(
                    f"TRL asked for prompts {block!r}: this rollout expects each prompt {k} times "
                    "in a row (TRL 1.16's RepeatSampler); the rollout_func contract has changed"
                )
            group = by_prompt[block[0]]
            prompt_ids += [list(group.prompt_ids)] * k
            completion_ids += [list(c) for c in group.completions]
            rewards += group.rewards
        # logprobs None: the engine's are before temperature; TRL computes its own
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": None,
            "reward": rewards,
        }

    return rollout_func


def precomputed_reward(name: str) -> Callable[..., list[float | None]]:
    """A TRL reward function that returns the rewards `rollout` passed along (named after
    the reward, so TRL logs `rewards/<name>/mean`)."""

    def reward_func(
        prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        return [float(r) for r in kwargs["reward"]]

    reward_func.__name__ = name
    return reward_func


def grpo_trainer(
    model: Any,
    tokenizer: Any,
    groups: Sequence[Group],
    settings: TrainSettings,
    grpo: GRPOSettings,
    work: Path,
) -> Any:
    """TRL's GRPOTrainer over `groups` (all informative, one K), LoRA through peft as for
    SFT; `model` is wrapped in place: pass a copy."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    ks = {len(g.completions) for g in groups}
    if len(ks) != 1:
        raise ValueError(f"groups of sizes {sorted(ks)}: GRPO needs the same K for every prompt")
    if not all(g.informative for g in groups) or len({g.prompt for g in groups}) < len(groups):
        raise ValueError("pass the groups through informative_groups first")
    k = ks.pop()
    completions = len(groups) * k
    args = optimize._common_args(settings, work, planned_grpo_steps(groups, settings, grpo), 1)
    args |= {
        "per_device_train_batch_size": step_batch(completions, settings.batch_size),
        "generation_batch_size": completions,  # one batch: no group left out, one baseline
        "num_generations": k,
        "num_iterations": grpo.iterations,
        "temperature": grpo.temperature,
        "max_completion_length": max(len(c) for g in groups for c in g.completions),
        "beta": grpo.beta,
        "epsilon": grpo.epsilon,
        "loss_type": grpo.loss_type,
        "scale_rewards": grpo.scale_rewards,
        "disable_dropout": True,  # LoRA's too: the same logprobs in the ratio's two passes
        "log_completions": False,
    }
    peft_config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*'rollout_func'.*experimental", category=UserWarning
        )
        return GRPOTrainer(
            model=model,
            reward_funcs=precomputed_reward(grpo.reward),
            args=GRPOConfig(**args),
            train_dataset=Dataset.from_list([{"prompt": g.prompt} for g in groups]),
            processing_class=tokenizer,
            peft_config=peft_config,
            rollout_func=rollout(groups),
        )


@dataclass(frozen=True)
class GRPOResult(TrainResult):
    """A GRPO run: the common result (examples = completions trained on) and the groups."""

    groups: int = 0  # trained on
    equal_rewards: int = 0  # dropped: all K rewards equal
    repeated: int = 0  # dropped: prompt already kept
    zero_std_share: float = 0.0
    step_logs: tuple[dict[str, float], ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        return super().summary() | {
            "groups": self.groups,
            "dropped_equal_rewards": self.equal_rewards,
            "dropped_repeated": self.repeated,
            "zero_std_share": self.zero_std_share,
            "step_logs": list(self.step_logs),
        }


def train_grpo(
    model: Any,
    tokenizer: Any,
    groups: Sequence[Group],
    *,
    settings: TrainSettings,
    grpo: GRPOSettings,
    version_dir: Path,
    on_step: StepFn | None = None,
) -> GRPOResult:
    """Train a LoRA adapter with GRPO on `groups` (equal-reward ones dropped first) and
    write `version_dir` (adapter/ and merged/, as `optimize.train_version`). `model` is
    wrapped and patched by TRL: pass a copy. ValueError when no group is informative."""
    from transformers import PrinterCallback, TrainerCallback

    optimize.check_new_version(version_dir)
    split = informative_groups(groups)
    if not split.kept:
        raise ValueError(
            f"no group to train on: {split.equal_rewards} of {len(groups)} had equal rewards "
            f"and {split.repeated} repeated a prompt"
        )
    started = time.perf_counter()
    work = version_dir.parent / f".{version_dir.name}.work"
    total = planned_grpo_steps(split.kept, settings, grpo)
    with optimize.keeps_global_random():
        trainer = grpo_trainer(model, tokenizer, split.kept, settings, grpo, work)

        class Progress(TrainerCallback):  # type: ignore[misc]
            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
            ) -> None:
                if on_step and logs and "loss" in logs:
                    on_step(state.global_step, total, float(logs["loss"]))

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(Progress())
        trainer.train()
    steps = tuple(
        {"step": entry["step"], **{key: float(entry[key]) for key in STEP_KEYS if key in entry}}
        for entry in trainer.state.log_history
        if "loss" in entry
    )
    optimize._save_version(trainer.model, tokenizer, version_dir, work)
    return GRPOResult(
        version_dir,
        trainer.state.global_step,
        steps[-1]["loss"] if steps else None,
        time.perf_counter() - started,
        sum(len(g.completions) for g in split.kept),
        groups=len(split.kept),
        equal_rewards=split.equal_rewards,
        repeated=split.repeated,
        zero_std_share=split.zero_std_share,
        step_logs=steps,
    )
