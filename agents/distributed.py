"""Optimize on a Ray cluster: the same TRL/peft training (`agents.optimize.fit`) in each
worker of Ray Train's `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU), rank 0 writing the
version folder once.

Why it equals one process: every worker loads the same weights and seeds as one process
would (TRL seeds before peft draws the adapter), takes `batch_size / workers` of each
batch (accelerate hands consecutive per-device batches of the same shuffled order to the
ranks, so a step sees the examples one process's step sees), and transformers averages the
loss over every rank's tokens (`average_tokens_across_devices`, its default). An epoch's
last batch that does not fill every rank is padded by accelerate with the epoch's first
examples (`even_batches`); `LastBatchMask` masks those rows out of SFT's loss, so that step
too trains on what one process's last step sees (17 examples at batch 16 would otherwise
train every second step on 16 rows, 15 of them repeats, instead of 1). Measured here:
losses equal to 1e-5 relative, LoRA weights within 1e-4 (tests/cluster/test_cluster_training.py).
DPO averages its loss over each rank's pairs, so its padded last batch still differs.

Ray Train 2.60 (Train V2) keeps metrics only with a reported checkpoint, so rank 0 writes
its losses beside the version and the driver reads them; the progress of a run's steps is
reported once it ends.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from agents.cluster import ClusterPolicy
from agents.optimize import (
    StepFn,
    TrainResult,
    TrainSettings,
    _save_version,
    check_new_version,
    fit,
    training_size,
)
from agents.selection import PreferencePair, SFTExample


def train_version_on_ray(
    source: str,
    *,
    sft: Sequence[SFTExample],
    pairs: Sequence[PreferencePair],
    settings: TrainSettings,
    version_dir: Path,
    cluster: ClusterPolicy,
    on_step: StepFn | None = None,
) -> TrainResult:
    """Train a LoRA adapter on the weights at `source` (a model name or a version's merged
    folder) with `cluster.train_workers` DDP workers and write `version_dir`."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    check_new_version(version_dir)
    n, total = training_size(sft, pairs, settings)
    if settings.batch_size % cluster.train_workers:
        raise ValueError(
            f"batch size {settings.batch_size} does not split over {cluster.train_workers} "
            "training workers: set optimize.batch_size to a multiple of cluster.train_workers"
        )
    started = time.perf_counter()
    losses_file = version_dir.parent / f".{version_dir.name}.losses.json"
    resources = cluster.worker_resources
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "source": source,
            "sft": list(sft),
            "pairs": list(pairs),
            "settings": settings,
            "version_dir": str(version_dir.absolute()),
            "losses_file": str(losses_file.absolute()),
            "threads": max(1, int(resources.CPU)),
        },
        scaling_config=ScalingConfig(
            num_workers=cluster.train_workers,
            use_gpu=resources.GPU > 0,
            resources_per_worker={"CPU": resources.CPU, "GPU": resources.GPU},
        ),
        torch_config=TorchConfig(backend=cluster.torch_backend()),
        run_config=RunConfig(
            name=f"train-{version_dir.name}",
            storage_path=str(version_dir.parent.absolute() / ".ray-train"),
        ),
    )
    trainer.fit()
    losses = read_losses(losses_file)
    for step, loss in enumerate(losses, start=1):
        if on_step:
            on_step(step, total, loss)
    shutil.rmtree(version_dir.parent / ".ray-train", ignore_errors=True)
    return TrainResult(
        version_dir, total, losses[-1] if losses else None, time.perf_counter() - started, n
    )


def read_losses(path: Path) -> list[float]:
    """The losses rank 0 wrote, the file removed."""
    losses = [float(x) for x in json.loads(path.read_text())]
    path.unlink()
    return losses


def real_rows_in_last_batch(examples: int, per_rank: int, world: int, rank: int) -> int:
    """How many of `rank`'s rows in an epoch's last step are examples, not padding:
    accelerate fills the last global batch in rank order, then pads (no-split sharding).

    >>> [real_rows_in_last_batch(17, 8, 2, r) for r in (0, 1)]  # 1 example, then padding
    [1, 0]
    >>> [real_rows_in_last_batch(28, 8, 2, r) for r in (0, 1)]
    [8, 4]
    >>> [real_rows_in_last_batch(32, 8, 2, r) for r in (0, 1)]  # full: nothing padded
    [8, 8]
    >>> [real_rows_in_last_batch(5, 8, 2, r) for r in (0, 1)]  # fewer than one batch
    [5, 0]
    """
    batch = per_rank * world
    in_last = examples - (math.ceil(examples / batch) - 1) * batch
    return min(max(in_last - rank * per_rank, 0), per_rank)


class LastBatchMask:
    """A DDP rank's data collator whose epoch-last batch has its padding rows' labels set
    to -100: they add no loss and no tokens to the step's average. The rank's batches come
    in order (one data-loader worker), so the call count says which is an epoch's last."""

    def __init__(self, collate: Any, *, examples: int, per_rank: int, world: int, rank: int):
        self.collate = collate
        self.batches_per_epoch = math.ceil(examples / (per_rank * world))
        self.real_rows = real_rows_in_last_batch(examples, per_rank, world, rank)
        self.calls = 0

    def __call__(self, features: list[Any]) -> Any:
        batch = self.collate(features)
        last = self.calls % self.batches_per_epoch == self.batches_per_epoch - 1
        self.calls += 1
        if last:
            batch["labels"][self.real_rows :] = -100
        return batch


def last_batch_mask(
    config: dict[str, Any], rank: int, world: int
) -> Callable[[Any], LastBatchMask] | None:
    """The collator wrapper of an SFT rank (None for DPO, whose loss has no labels to mask)."""
    settings: TrainSettings = config["settings"]
    if settings.method != "sft":
        return None
    per_rank = settings.batch_size // world
    return partial(
        LastBatchMask, examples=len(config["sft"]), per_rank=per_rank, world=world, rank=rank
    )


def train_worker(config: dict[str, Any]) -> None:
    """One DDP rank: load the weights as the engine does, fit its share of each batch;
    rank 0 writes the version folder and the losses."""
    import ray.train
    import torch

    from engines.hf import HFEngine

    engine = HFEngine.load(config["source"])  # the tokenizer set up as the engine's
    if not torch.cuda.is_available():
        torch.set_num_threads(config["threads"])
    version_dir = Path(config["version_dir"])
    context = ray.train.get_context()
    work = version_dir.parent / f".{version_dir.name}.work-{context.get_world_rank()}"
    trainer, losses = fit(
        engine.model,
        engine.tokenizer,
        config["sft"],
        config["pairs"],
        config["settings"],
        work,
        processes=context.get_world_size(),
        collate=last_batch_mask(config, context.get_world_rank(), context.get_world_size()),
    )
    if context.get_world_rank() == 0:
        _save_version(trainer.model, engine.tokenizer, version_dir, work)
        Path(config["losses_file"]).write_text(json.dumps(losses))
    shutil.rmtree(work, ignore_errors=True)
