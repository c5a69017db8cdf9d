"""Optimize: LoRA SFT (or DPO on preference pairs) with TRL + peft; a new model version.
GRPO on the groups acquire sampled is `agents.grpo.train_grpo`, beside this module.

A version is a folder: `adapter/` (the LoRA weights) and `merged/` (full weights, loadable
by any engine). The previous version is never overwritten.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from agents.config import StageConfig
from agents.monitor import MonitorPolicy, policy_gains
from agents.planning import RULES_REASON, Bound, Checked, clamp, history_rows, shown_bounds
from agents.records import CycleMetrics, Plan, Stage
from agents.rewards import RewardName
from agents.selection import PreferencePair, SFTExample

Method = Literal["sft", "dpo", "grpo"]


class OptimizePolicy(StageConfig):
    """Optimize: LoRA SFT, DPO or GRPO with TRL + peft; a new model version per run."""

    method: Method = Field(
        default="sft",
        description="sft on selected examples, dpo on preference pairs, or grpo on the groups "
        "acquire sampled (each prompt's K samples and their rewards; TRL's GRPOTrainer takes "
        "them through its rollout_func, so nothing is generated twice).",
    )
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    learning_rate: float = Field(default=2e-4, gt=0.0, description="Learning rate the rules use.")
    min_learning_rate: float = Field(
        default=1e-5, gt=0.0, description="Lowest learning rate a planner or a retrain may use."
    )
    max_learning_rate: float = Field(
        default=5e-4, gt=0.0, description="Highest learning rate a planner may use."
    )
    epochs: float = Field(
        default=3.0, gt=0.0, description="Passes over the selected data the rules use."
    )
    max_epochs: float = Field(
        default=5.0, gt=0.0, description="Most passes a planner or a retrain may use."
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per optimizer step.")
    max_steps: int = Field(
        default=0, ge=0, description="Cap on optimizer steps per training run (0: no cap)."
    )
    dpo_beta: float = Field(
        default=0.1, gt=0.0, description="DPO's beta (strength of the KL anchor)."
    )
    grpo_reward: RewardName = Field(
        default="verifier",
        description="grpo: each sample's reward (agents.rewards): verifier, 1 right and 0 "
        "otherwise; truthfulness, +1 right, 0 abstention (as evaluate counts one), -1 wrong "
        "(the honesty loop). truthfulness differs from verifier only in groups that hold an "
        "abstention (elsewhere it is 2 x verifier - 1, the same direction under every "
        "scaling), and the initial 135M model sampled none in 384 honesty samples (96 "
        "capitals x 4, T=0.8): use it after an abstention warm-up (a select.strategy "
        "learn_abstention SFT cycle), not on a model that never abstains.",
    )
    grpo_scale_rewards: Literal["group", "batch", "none"] = Field(
        default="batch",
        description="grpo: what the group-centred rewards are divided by. batch (the default): "
        "one std over every kept group, so groups keep their sizes relative to each other "
        "(measured with TRL 1.16 on [1,-1,-1,-1] and [0,-1,-1,-1] in one batch: the right "
        "answer gets 2.06, the abstention among wrong answers 1.03, half, as truthfulness "
        "says) and the step does not grow with the reward's scale. group (TRL's default) "
        "makes each group unit-variance: [1,-1,-1,-1] gets exactly the advantages of "
        "[1,0,0,0], an abstention in [0,-1,-1,-1] the 1.5 of a right answer, and "
        "low-variance groups are amplified. none keeps raw differences: the same directions "
        "as batch, but truthfulness's steps twice verifier's.",
    )
    grpo_loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        default="dapo",
        description="grpo: TRL's loss aggregation; dapo (TRL's default) averages over every "
        "completion token of the step, so long completions do not dilute per-token updates.",
    )
    grpo_beta: float = Field(
        default=0.0,
        ge=0.0,
        description="grpo: KL weight toward the version being trained (0: no reference "
        "forward pass, the cheapest on CPU; TRL's default).",
    )
    grpo_iterations: int = Field(
        default=1,
        ge=1,
        le=8,
        description="grpo: passes over the sampled groups (mu in the GRPO paper); passes after "
        "the first are off-policy and PPO-clipped (grpo_epsilon). GRPO ignores `epochs`.",
    )
    grpo_epsilon: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="grpo: PPO clipping range of the ratio."
    )
    grpo_warmup_cycles: int = Field(
        default=0,
        ge=0,
        description="grpo: the first cycles train with SFT on select's data (e.g. abstention "
        "examples) before GRPO takes over: a model that never samples an abstention gets no "
        "truthfulness reward for one, so the warm-up teaches it to say it first.",
    )
    retrain_lr_factor: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A retrain after an update that lost accuracy multiplies the learning rate by "
        "this (never below min_learning_rate).",
    )

    @model_validator(mode="after")
    def _check(self) -> OptimizePolicy:
        lo, lr, hi = self.min_learning_rate, self.learning_rate, self.max_learning_rate
        if not lo <= lr <= hi:
            raise ValueError(
                f"optimize.learning_rate {lr:g} is outside [min_learning_rate {lo:g}, "
                f"max_learning_rate {hi:g}]: move the rate or the bounds"
            )
        if self.epochs > self.max_epochs:
            raise ValueError(
                f"optimize.epochs ({self.epochs:g}) exceeds optimize.max_epochs "
                f"({self.max_epochs:g}): raise max_epochs or lower epochs"
            )
        return self


StepFn = Callable[[int, int, float | None], None]  # (step, total_steps, loss)


@dataclass(frozen=True)
class TrainSettings:
    """One training run's settings: the `OptimizePolicy` values a planner or a retrain chose
    (defaults live there, once), plus the run's seed."""

    method: Method
    learning_rate: float
    epochs: float
    batch_size: int
    max_steps: int  # 0 = as many as the epochs need
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    dpo_beta: float
    seed: int

    @classmethod
    def from_policy(cls, policy: OptimizePolicy, *, seed: int, **chosen: Any) -> TrainSettings:
        """The policy's settings, with a planner's or a retrain's `chosen` values on top."""
        return cls(**({key: getattr(policy, key) for key in TRAIN_KEYS} | chosen), seed=seed)


TRAIN_KEYS = tuple(f.name for f in fields(TrainSettings) if f.name != "seed")


def method_at(policy: OptimizePolicy, cycle: int) -> Method:
    """The training method of `cycle`: SFT during GRPO's warm-up cycles, else the policy's.

    >>> p = OptimizePolicy(method="grpo", grpo_warmup_cycles=1)
    >>> method_at(p, 1), method_at(p, 2), method_at(OptimizePolicy(), 1)
    ('sft', 'grpo', 'sft')
    """
    if policy.method == "grpo" and cycle <= policy.grpo_warmup_cycles:
        return "sft"
    return policy.method


@dataclass(frozen=True)
class TrainResult:
    version_dir: Path
    steps: int
    final_loss: float | None
    seconds: float
    examples: int

    def summary(self) -> dict[str, Any]:
        """What the trace records of the run (the version folder is in the state)."""
        return {
            "steps": self.steps,
            "final_loss": self.final_loss,
            "train_seconds": self.seconds,
            "examples": self.examples,
        }


def conversational_sft_rows(examples: Sequence[SFTExample]) -> list[dict[str, Any]]:
    """Prompt-completion rows in chat form, so TRL applies the same chat template the engine
    uses and computes the loss on the completion only."""
    return [
        {
            "prompt": [{"role": "user", "content": e.prompt}],
            "completion": [{"role": "assistant", "content": e.completion}],
        }
        for e in examples
    ]


def conversational_dpo_rows(pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]


def planned_steps(n_examples: int, settings: TrainSettings) -> int:
    """Optimizer steps the settings imply.

    >>> policy = OptimizePolicy(batch_size=16, epochs=2)
    >>> planned_steps(40, TrainSettings.from_policy(policy, seed=0))
    6
    >>> planned_steps(40, TrainSettings.from_policy(policy, seed=0, max_steps=4))
    4
    """
    per_epoch = math.ceil(n_examples / settings.batch_size)
    steps = math.ceil(per_epoch * settings.epochs)
    return min(steps, settings.max_steps) if settings.max_steps > 0 else steps


def _common_args(
    settings: TrainSettings, output_dir: Path, total_steps: int, processes: int
) -> dict[str, Any]:
    """TrainingArguments shared by SFT and DPO; with `processes` DDP workers each takes an
    equal share of the batch (transformers then averages the loss over every process's
    tokens, `average_tokens_across_devices`, so the step equals one process's)."""
    import torch

    on_cpu = not torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "learning_rate": settings.learning_rate,
        "per_device_train_batch_size": settings.batch_size // processes,
        "max_steps": total_steps,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,  # fp32: bf16 on this CPU made one step take minutes instead of ~16 s
        "fp16": False,
        "use_cpu": on_cpu,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "seed": settings.seed,
        "dataloader_num_workers": 0,
    }


def train_version(
    model: Any,
    tokenizer: Any,
    *,
    sft: Sequence[SFTExample],
    pairs: Sequence[PreferencePair],
    settings: TrainSettings,
    version_dir: Path,
    on_step: StepFn | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `model` (left untouched) and write `version_dir`."""
    check_new_version(version_dir)
    started = time.perf_counter()
    n, total = training_size(sft, pairs, settings)
    work = version_dir.parent / f".{version_dir.name}.work"
    trainer, losses = fit(model, tokenizer, sft, pairs, settings, work, on_step=on_step)
    _save_version(trainer.model, tokenizer, version_dir, work)
    return TrainResult(
        version_dir, total, losses[-1] if losses else None, time.perf_counter() - started, n
    )


def check_new_version(version_dir: Path) -> None:
    if version_dir.exists():
        raise FileExistsError(
            f"model version {version_dir} already exists; versions are never overwritten"
        )


def training_size(
    sft: Sequence[SFTExample], pairs: Sequence[PreferencePair], settings: TrainSettings
) -> tuple[int, int]:
    """(examples, optimizer steps) of a run; ValueError when there is nothing to train on."""
    if settings.method == "grpo":
        raise ValueError(
            "optimize.method 'grpo' trains on sampled groups, not on SFT examples or pairs: "
            "call agents.grpo.train_grpo"
        )
    n = len(sft) if settings.method == "sft" else len(pairs)
    if n == 0:
        raise ValueError(f"no training data for {settings.method}")
    return n, planned_steps(n, settings)


def fit(
    model: Any,
    tokenizer: Any,
    sft: Sequence[SFTExample],
    pairs: Sequence[PreferencePair],
    settings: TrainSettings,
    work: Path,
    *,
    processes: int = 1,
    on_step: StepFn | None = None,
    collate: Callable[[Any], Any] | None = None,
) -> tuple[Any, list[float]]:
    """The trained TRL trainer (its `model` the peft model) and the loss of every step. In
    a DDP worker (`processes` > 1) each process runs this on its share of each batch;
    `collate` wraps the trainer's data collator (the worker's last-batch mask)."""
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback

    _, total = training_size(sft, pairs, settings)
    shutil.rmtree(work, ignore_errors=True)
    peft_config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    losses: list[float] = []

    class Progress(TrainerCallback):  # type: ignore[misc]
        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, float] | None = None,
            **kw: Any,
        ) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if on_step:
                    on_step(state.global_step, total, float(logs["loss"]))

    disable_progress_bars()
    args = _common_args(settings, work, total, processes)
    with keeps_global_random():
        trainer = _make_trainer(model, tokenizer, settings, args, peft_config, sft, pairs, Dataset)
        if collate:
            trainer.data_collator = collate(trainer.data_collator)
        trainer.remove_callback(PrinterCallback)  # progress goes through on_step, not stdout
        trainer.add_callback(Progress())
        trainer.train()
    return trainer, losses


@contextlib.contextmanager
def keeps_global_random() -> Iterator[None]:
    """Python's global `random` state as it was before: transformers' trainers reseed it
    (`set_seed`), which made the ids OpenTelemetry draws from it repeat from one training
    run to the next, so an MLflow trace written after a run could take the id, and the
    place, of one written after an earlier run.

    >>> import random
    >>> before = random.random(); state = random.getstate()
    >>> with keeps_global_random():
    ...     random.seed(0)
    >>> random.getstate() == state
    True
    """
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def _make_trainer(model, tokenizer, settings, args, peft_config, sft, pairs, dataset_cls):  # type: ignore[no-untyped-def]
    if settings.method == "sft":
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(**args, completion_only_loss=True, max_length=512)
        return SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset_cls.from_list(conversational_sft_rows(sft)),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    from trl import DPOConfig, DPOTrainer

    dpo_config = DPOConfig(**args, beta=settings.dpo_beta, max_length=512)
    return DPOTrainer(
        model=model,
        args=dpo_config,
        train_dataset=dataset_cls.from_list(conversational_dpo_rows(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def _save_version(peft_model: Any, tokenizer: Any, version_dir: Path, work: Path) -> None:
    """adapter/ and merged/ written into a temp folder, then renamed into place."""
    from storage.layout import SessionLayout

    tmp = version_dir.parent / f".{version_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(SessionLayout.adapter_of(tmp))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(SessionLayout.merged_of(tmp))
    tokenizer.save_pretrained(SessionLayout.merged_of(tmp))
    tmp.replace(version_dir)
    shutil.rmtree(work, ignore_errors=True)


# -- planning: optimize's choices (agents.planning.StagePlanning) ---------------------------


class OptimizePlan(Plan):
    """Training settings for this run."""

    learning_rate: float = Field(description="learning rate")
    epochs: float = Field(default=1.0, description="passes over the data")


class OptimizeSections(Protocol):
    """The session policy's sections optimize's planning reads."""

    @property
    def optimize(self) -> OptimizePolicy: ...
    @property
    def monitor(self) -> MonitorPolicy: ...


@dataclass(frozen=True)
class OptimizeFacts:
    """What optimize's planning knows besides the policy: with `previous` (a retrain) the
    rules adjust that run's settings, by the last evaluation's gain unless `last_gain` is
    given; else a `recipe` chosen after a rollback (its settings and `why`) replaces the
    policy's."""

    cycle: int
    history: Sequence[CycleMetrics]
    examples: int
    previous: Mapping[str, Any] | None = None
    last_gain: float | None = None
    recipe: Mapping[str, Any] | None = None


def optimize_bounds(policy: OptimizePolicy) -> dict[str, Bound]:
    """What a planner may ask for: shown to it, and enforced on its proposal."""
    return {
        "learning_rate": Bound(
            policy.min_learning_rate,
            policy.max_learning_rate,
            "optimize.min_learning_rate/max_learning_rate",
        ),
        "epochs": Bound(0, policy.max_epochs, "optimize.max_epochs"),
    }


def retrain_settings(
    previous: Mapping[str, Any], policy: OptimizePolicy, last_gain: float | None
) -> tuple[dict[str, Any], str]:
    """Settings for a retrain on the same data: gentler after an update that lost accuracy,
    longer (or, at max_epochs, faster) after one that did not move; always within bounds."""
    settings = _train_settings(previous, policy)
    epochs = float(settings["epochs"])
    if last_gain is not None and last_gain < 0:
        return gentler_settings(previous, policy, f"the update lost accuracy ({last_gain:+.1%})")
    if epochs < policy.max_epochs:
        settings["epochs"] = min(epochs + 1, policy.max_epochs)
        return (
            settings,
            f"the update did not move accuracy: epochs {epochs:g} -> {settings['epochs']:g}",
        )
    lr = float(settings["learning_rate"])
    new_lr = min(lr / policy.retrain_lr_factor, policy.max_learning_rate)
    settings["learning_rate"] = new_lr
    return (
        settings,
        f"the update did not move accuracy at max epochs: learning rate {lr:g} -> {new_lr:g}",
    )


def gentler_settings(
    previous: Mapping[str, Any], policy: OptimizePolicy, because: str
) -> tuple[dict[str, Any], str]:
    """`previous` run's settings with the learning rate times `retrain_lr_factor` (never
    under min_learning_rate), and why (`because`, then the change).

    >>> gentler_settings({"learning_rate": 2e-4}, OptimizePolicy(), "v2 was rolled back")[1]
    'v2 was rolled back: learning rate 0.0002 -> 0.0001'
    >>> gentler_settings({"learning_rate": 1e-5}, OptimizePolicy(), "v2 collapsed")[1]
    'v2 collapsed: learning rate 1e-05 is at optimize.min_learning_rate, kept'
    """
    settings = _train_settings(previous, policy)
    lr = float(settings["learning_rate"])
    new_lr = max(lr * policy.retrain_lr_factor, policy.min_learning_rate)
    settings["learning_rate"] = new_lr
    if new_lr == lr:
        return settings, f"{because}: learning rate {lr:g} is at optimize.min_learning_rate, kept"
    return settings, f"{because}: learning rate {lr:g} -> {new_lr:g}"


def _train_settings(previous: Mapping[str, Any], policy: OptimizePolicy) -> dict[str, Any]:
    return {key: getattr(policy, key) for key in TRAIN_KEYS} | {
        k: v for k, v in previous.items() if k in TRAIN_KEYS
    }


class OptimizePlanning:
    """The training settings (`TrainSettings` fields, less the seed); a planner chooses the
    learning rate and the epochs."""

    stage: Stage = "optimize"
    schema = OptimizePlan
    guide = "Choose the learning rate and the number of epochs for this LoRA training run."

    def rules(self, policy: OptimizeSections, facts: OptimizeFacts) -> tuple[dict[str, Any], str]:
        o, cycle = policy.optimize, facts.cycle
        if facts.previous is not None:
            last_gain = facts.last_gain
            if last_gain is None and len(facts.history) > 1:
                last_gain = policy_gains(facts.history, policy.monitor)[-1]  # the retried update
            return retrain_settings(facts.previous, o, last_gain)
        settings, why = _train_settings({}, o), RULES_REASON
        if facts.recipe is not None:
            settings, why = _train_settings(facts.recipe, o), str(facts.recipe.get("why", ""))
        settings["method"] = method_at(o, cycle)
        if settings["method"] != o.method:
            why = f"GRPO's warm-up (cycle {cycle} of {o.grpo_warmup_cycles}): sft"
        return settings, why

    def situation(
        self, policy: OptimizeSections, facts: OptimizeFacts, rules: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "cycle": facts.cycle,
            "history": history_rows(facts.history),
            "examples": facts.examples,
            "retrain": facts.previous is not None,
            "bounds": shown_bounds(optimize_bounds(policy.optimize)),
            "rules_choice": {"learning_rate": rules["learning_rate"], "epochs": rules["epochs"]},
        }

    def check(
        self,
        plan: OptimizePlan,
        policy: OptimizeSections,
        facts: OptimizeFacts,
        rules: Mapping[str, Any],
    ) -> Checked:
        notes: list[str] = []
        final = dict(rules)
        kinds = {"learning_rate": "a rate", "epochs": "a number of passes"}
        for name, bound in optimize_bounds(policy.optimize).items():
            value = getattr(plan, name)
            if not math.isfinite(value) or value <= 0:
                notes.append(f"{name} {value} is not {kinds[name]} -> {rules[name]:g}")
            else:
                final[name] = clamp(name, value, bound, notes)
        return Checked(final, notes)


OPTIMIZE_PLANNING = OptimizePlanning()
