"""Load an engine of a given kind: the one place that knows every engine module and builds
engines (the CLI, the session's model versions and LangGraph Studio call it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engines.base import Engine
from engines.loading import EngineNotInstalledError, engine_problem

if TYPE_CHECKING:
    from engines.cluster import PoolOptions


def load_engine(name_or_path: str, kind: str = "transformers") -> Engine:
    """An `Engine` of kind `kind` ('transformers' or 'vllm') over a model name or path;
    EngineNotInstalledError (before anything loads) when that engine is not installed."""
    from engines.vlm import VLMFolderError, is_vlm_folder

    if is_vlm_folder(name_or_path):
        raise VLMFolderError(
            f"{name_or_path} is a vision-language model: `eval`, `answer --image` and "
            "`probe sweep | eval | score` take one; this command runs text models"
        )
    problem = engine_problem(kind)
    if problem:
        raise EngineNotInstalledError(problem)
    if kind == "vllm":
        from engines.vllm import VLLMEngine

        return VLLMEngine.load(name_or_path)
    if kind != "transformers":
        raise ValueError(f"unknown engine {kind!r}: expected 'transformers' or 'vllm'")
    from engines.hf import HFEngine

    return HFEngine.load(name_or_path)


def load_cluster_engine(
    name_or_path: str, options: PoolOptions, *, address: str | None = None
) -> Engine:
    """The model on Ray generation actors (`options`: how many, what each reserves),
    joining the cluster at `address` (None: start a local one)."""
    from engines.cluster import ClusterEngine

    return ClusterEngine.load(name_or_path, options, address=address)
