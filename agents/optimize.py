"""Optimize: LoRA SFT (or DPO on preference pairs) with TRL + peft; a new model version.

A version is a folder: `adapter/` (the LoRA weights) and `merged/` (full weights, loadable
by any engine). The previous version is never overwritten.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from agents.selection import PreferencePair, SFTExample

StepFn = Callable[[int, int, float | None], None]  # (step, total_steps, loss)


@dataclass(frozen=True)
class TrainSettings:
    method: Literal["sft", "dpo"] = "sft"
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 16
    max_steps: int = 0  # 0 = as many as the epochs need
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    dpo_beta: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    version_dir: Path
    steps: int
    final_loss: float | None
    seconds: float
    examples: int


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

    >>> planned_steps(40, TrainSettings(batch_size=16, epochs=2))
    6
    >>> planned_steps(40, TrainSettings(batch_size=16, epochs=2, max_steps=4))
    4
    """
    per_epoch = math.ceil(n_examples / settings.batch_size)
    steps = math.ceil(per_epoch * settings.epochs)
    return min(steps, settings.max_steps) if settings.max_steps > 0 else steps


def _common_args(settings: TrainSettings, output_dir: Path, total_steps: int) -> dict[str, Any]:
    on_cpu = not torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "learning_rate": settings.learning_rate,
        "per_device_train_batch_size": settings.batch_size,
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
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback

    if version_dir.exists():
        raise FileExistsError(
            f"model version {version_dir} already exists; versions are never overwritten"
        )
    n = len(sft) if settings.method == "sft" else len(pairs)
    if n == 0:
        raise ValueError(f"no training data for {settings.method}")
    total = planned_steps(n, settings)
    work = version_dir.parent / f".{version_dir.name}.work"
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

    started = time.perf_counter()
    disable_progress_bars()
    trainer = _make_trainer(
        model, tokenizer, settings, work, total, peft_config, sft, pairs, Dataset
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through on_step, not stdout
    trainer.add_callback(Progress())
    trainer.train()
    _save_version(trainer.model, tokenizer, version_dir, work)
    return TrainResult(
        version_dir, total, losses[-1] if losses else None, time.perf_counter() - started, n
    )


def _make_trainer(model, tokenizer, settings, work, total, peft_config, sft, pairs, dataset_cls):  # type: ignore[no-untyped-def]
    if settings.method == "sft":
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(
            **_common_args(settings, work, total), completion_only_loss=True, max_length=512
        )
        return SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset_cls.from_list(conversational_sft_rows(sft)),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    from trl import DPOConfig, DPOTrainer

    dpo_config = DPOConfig(
        **_common_args(settings, work, total), beta=settings.dpo_beta, max_length=512
    )
    return DPOTrainer(
        model=model,
        args=dpo_config,
        train_dataset=dataset_cls.from_list(conversational_dpo_rows(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def _save_version(peft_model: Any, tokenizer: Any, version_dir: Path, work: Path) -> None:
    """adapter/ and merged/ written into a temp folder, then renamed into place."""
    tmp = version_dir.parent / f".{version_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp / "merged")
    tokenizer.save_pretrained(tmp / "merged")
    tmp.replace(version_dir)
    shutil.rmtree(work, ignore_errors=True)
