"""Load an engine of a given kind: the one place that knows every engine module."""

from __future__ import annotations

from engines.base import Engine
from engines.loading import EngineNotInstalledError, engine_problem


def load_engine(name_or_path: str, kind: str = "transformers") -> Engine:
    """An `Engine` of kind `kind` ('transformers' or 'vllm') over a model name or path;
    EngineNotInstalledError (before anything loads) when that engine is not installed."""
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
