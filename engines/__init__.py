"""Model engines: load a model, generate with prefill hidden-state capture, extract features.

Imports nothing else of ours, so every other package can stand on it.
"""

from engines.base import Engine, Generation, PromptStates, Sample
from engines.hf import HFEngine, load_model
from engines.loading import DEFAULT_MODEL, ModelNotFoundError

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
