"""The policy's `cluster` section: where a session's generation and training run.

`backend: local` (the default) is one process and never imports Ray. `backend: ray` puts
generation on persistent Ray actors (`engines.cluster.ClusterEngine`) and optimize's
training in Ray Train's `TorchTrainer` (`agents.distributed`), with the same results as one
process (tests/cluster/test_cluster_*.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agents.config import StageConfig


class WorkerResources(StageConfig):
    """What one Ray worker (a generation actor or a training worker) reserves."""

    CPU: float = Field(default=1.0, gt=0.0, description="CPUs per worker (its torch threads).")
    GPU: float = Field(default=0.0, ge=0.0, description="GPUs per worker (0 on a CPU cluster).")


class ClusterPolicy(StageConfig):
    """Cluster: run generation and training on Ray (backend 'ray') or in this process."""

    backend: Literal["local", "ray"] = Field(
        default="local",
        description="'local': one process, no Ray; 'ray': generation actors and a TorchTrainer "
        "(the cluster extra: pip install -e '.[cluster]').",
    )
    address: str | None = Field(
        default=None,
        description="Ray cluster: null starts a local Ray on this machine; 'auto' joins the one "
        "`ray start` runs here; 'ray://HOST:10001' a remote one through Ray Client.",
    )
    generation_workers: int = Field(
        default=2, ge=1, description="Persistent generation actors prompts are sharded over."
    )
    worker_resources: WorkerResources = Field(
        default=WorkerResources(), description=WorkerResources.__doc__
    )
    train_workers: int = Field(
        default=2,
        ge=1,
        description="TorchTrainer workers (DDP); each takes optimize.batch_size / train_workers "
        "examples per step.",
    )
    train_backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto",
        description="torch.distributed backend: auto = nccl with GPUs, gloo without.",
    )
    storage: str | None = Field(
        default=None,
        description="A folder every node reads and writes (NFS, a mounted bucket) for model "
        "versions and Ray Train's run files; null: the session's folder (one node only). "
        "Required when the cluster has more than one node.",
    )

    @model_validator(mode="after")
    def _check(self) -> ClusterPolicy:
        if self.train_backend == "nccl" and self.worker_resources.GPU == 0:
            raise ValueError(
                "cluster.train_backend 'nccl' needs GPUs: set cluster.worker_resources.GPU=1 "
                "or cluster.train_backend=gloo"
            )
        return self

    def torch_backend(self) -> str:
        """The torch.distributed backend training uses.

        >>> ClusterPolicy().torch_backend()
        'gloo'
        >>> ClusterPolicy(worker_resources=WorkerResources(GPU=1)).torch_backend()
        'nccl'
        """
        if self.train_backend != "auto":
            return self.train_backend
        return "nccl" if self.worker_resources.GPU > 0 else "gloo"
