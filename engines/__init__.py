"""Model engines: load a model, generate with prefill hidden-state capture, extract features.

Imports nothing else of ours, so every other package can stand on it. Importing the
package is light: transformers loads only when an engine is (`load_model`, `HFEngine`).
"""

from typing import Any

from engines.base import Engine, Generation, PromptStates, Sample
from engines.loading import DEFAULT_MODEL, ModelNotFoundError


def __getattr__(name: str) -> Any:
    if name in ("HFEngine", "load_model"):
        from engines import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "Engine",
    "Generation",
    "HFEngine",
    "ModelNotFoundError",
    "PromptStates",
    "Sample",
    "load_model",
]
