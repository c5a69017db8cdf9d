"""Model engines: load a model, generate with prefill hidden-state capture, extract features.

Imports nothing else of ours, so every other package can stand on it.
"""

from engines.base import Engine, Generation, PromptStates, Sample
from engines.loading import DEFAULT_MODEL, ModelNotFoundError, load_model

__all__ = [
    "DEFAULT_MODEL",
    "Engine",
    "Generation",
    "ModelNotFoundError",
    "PromptStates",
    "Sample",
    "load_model",
]
