"""The cluster engine: the `Engine` protocol over persistent Ray actors, each holding the
transformers engine (`HFEngine`), with the same generations and prefill states as one
process.

Decisions, and why:

- **Sharding.** Prompts are cut at the engine's batch size, the same cut `HFEngine.generate`
  makes, and batch `i` (prompts `start..start+batch_size`) goes to actor `i % workers` with
  seed `seed + start`: the seed `HFEngine` gives that batch in one process. Each batch is
  decoded with the same rows, the same generator and the same code, so token ids and
  prefill states equal one process's (tests/cluster/test_cluster_engine.py checks it).
- **Threads.** Each actor pins `torch.set_num_threads` to its CPUs
  (`cluster.worker_resources.CPU`), so actors do not oversubscribe the node.
- **Versions.** An actor loads a model once and keeps it; every call names the weights it
  wants (`source`: the base model's name, or a version's merged folder) and an actor swaps
  only when that changes. So one pool serves every model version of a session
  (`for_version`), and a pool started again (after training released it, or in a resumed
  process) needs nothing but the calls. Versions are loaded as merged folders, as the other
  engines do (engines/vllm.py says why), not as adapters.
- **Release.** Actors reserve their CPUs/GPUs while they live; on a small cluster the
  training workers could never be scheduled beside them (measured: a 2-CPU cluster
  deadlocked). `release()` ends them before training; the next call starts them again.
- **Risk.** `generate`'s `risk_fn` runs here, on the states the actors return: the probe
  never travels.
- **Nothing of Ray is imported** until a pool starts: `cluster.backend: local` never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engines.base import Generation, ProgressFn, PromptStates, RiskFn, SamplingParams, score_risk

Shard = tuple[int, int]  # (start, stop) into the prompt list


def shards(n_prompts: int, batch_size: int) -> list[Shard]:
    """The batches one process would run, as (start, stop).

    >>> shards(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    >>> shards(0, 2)
    []
    """
    return [
        (start, min(start + batch_size, n_prompts)) for start in range(0, n_prompts, batch_size)
    ]


@dataclass(frozen=True)
class PoolOptions:
    """The actors of a pool: how many, what each reserves, its engine's batch size."""

    workers: int = 2
    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 32


def connect(address: str | None = None, *, num_cpus: int | None = None) -> int:
    """Join (or, with `address` None, start) a Ray cluster once per process; the number of
    live nodes. Ray 2.60 has token authentication on: a local start writes its token to
    `~/.ray/auth_token` itself, a remote cluster's token comes from `RAY_AUTH_TOKEN` or that
    file (Ray reads both)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    return sum(1 for node in ray.nodes() if node.get("Alive"))


class GenerationWorker:
    """One actor's state: the transformers engine over the weights last asked for."""

    def __init__(self, threads: int, batch_size: int) -> None:
        self.threads, self.batch_size = threads, batch_size
        self.source: str | None = None
        self.engine: Any = None

    def _load(self, source: str) -> Any:
        import torch

        from engines.hf import HFEngine

        if source != self.source:
            self.engine = None  # the old weights go before the new ones load
            self.engine = HFEngine.load(source, batch_size=self.batch_size)
            self.source = source
        if not torch.cuda.is_available():
            torch.set_num_threads(self.threads)  # HFEngine.load sets the node's core count
        return self.engine

    def describe(self, source: str) -> tuple[str, int, str]:
        """(name, layers, fingerprint) of the weights at `source`."""
        engine = self._load(source)
        return engine.name, engine.num_layers, engine.fingerprint

    def generate(
        self, source: str, prompts: list[str], params: SamplingParams, capture: bool
    ) -> Any:
        return self._load(source).generate(prompts, params, capture=capture)

    def hidden_states(self, source: str, prompts: list[str], until_layer: int | None) -> Any:
        return self._load(source).hidden_states(prompts, until_layer=until_layer)


@dataclass
class WorkerPool:
    """Persistent generation actors, started on first use and ended by `release`."""

    options: PoolOptions
    _actors: list[Any] = field(default_factory=list)

    def actors(self) -> list[Any]:
        if not self._actors:
            import ray

            remote = ray.remote(num_cpus=self.options.cpus, num_gpus=self.options.gpus)(
                GenerationWorker
            )
            threads = max(1, int(self.options.cpus))
            self._actors = [
                remote.remote(threads, self.options.batch_size)  # type: ignore[attr-defined]
                for _ in range(self.options.workers)
            ]
        return self._actors

    def release(self) -> None:
        """End the actors (their CPUs/GPUs go back to the cluster)."""
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def run(
        self,
        method: str,
        source: str,
        calls: Sequence[tuple[Shard, tuple[Any, ...]]],
        on_progress: ProgressFn | None = None,
    ) -> list[Any]:
        """Call `method(source, *args)` for each shard, shard `i` on actor `i % workers`
        (each actor runs its calls in order); the results in shard order."""
        actors = self.actors()
        refs = [
            getattr(actors[i % len(actors)], method).remote(source, *args)
            for i, (_, args) in enumerate(calls)
        ]
        sizes = [stop - start for (start, stop), _ in calls]
        return gather(refs, sizes, on_progress)


def gather(refs: list[Any], sizes: list[int], on_progress: ProgressFn | None) -> list[Any]:
    """The results of `refs` in order, reporting (prompts done, total) as each arrives."""
    import ray

    size_of = dict(zip(refs, sizes, strict=True))
    pending, done = list(refs), 0
    while pending and on_progress:
        ready, pending = ray.wait(pending, num_returns=1)
        done += sum(size_of[ref] for ref in ready)
        on_progress(done, sum(sizes))
    return list(ray.get(refs)) if refs else []


class ClusterEngine:
    """`Engine` over a `WorkerPool`: the weights at `source`, sharded over its actors."""

    captures_prefill = True

    def __init__(self, pool: WorkerPool, source: str) -> None:
        self.pool, self.source = pool, source
        self.batch_size = pool.options.batch_size
        (first,) = pool.run("describe", source, [((0, 0), ())])
        self.name, self.num_layers, self._fingerprint = first

    @classmethod
    def load(
        cls, name_or_path: str, options: PoolOptions, *, address: str | None = None
    ) -> ClusterEngine:
        """Join or start the cluster, start the actors, load `name_or_path` on each."""
        connect(address)
        return cls(WorkerPool(options), name_or_path)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def for_version(self, source: str) -> ClusterEngine:
        """The engine of other weights (a trained version's merged folder), same actors."""
        return ClusterEngine(self.pool, source)

    def release(self) -> None:
        """End the actors before training needs their resources; the next call restarts them."""
        self.pool.release()

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        calls = [
            (
                (start, stop),
                (list(prompts[start:stop]), replace(params, seed=params.seed + start), capture),
            )
            for start, stop in shards(len(prompts), self.batch_size)
        ]
        batches = self.pool.run("generate", self.source, calls, on_progress)
        return score_risk([g for batch in batches for g in batch], risk_fn)

    def hidden_states(
        self,
        prompts: Sequence[str],
        *,
        until_layer: int | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[PromptStates]:
        calls = [
            ((start, stop), (list(prompts[start:stop]), until_layer))
            for start, stop in shards(len(prompts), self.batch_size)
        ]
        batches = self.pool.run("hidden_states", self.source, calls, on_progress)
        return [states for batch in batches for states in batch]
