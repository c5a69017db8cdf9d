"""The vLLM engine in tests: skipped where vLLM is absent, failed in CI (CI=true), where
`make test` installs it into .venv-vllm and runs the `vllm` tests with that interpreter."""

from __future__ import annotations

import atexit
import importlib.util
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from tests.ci_rules import skip_or_fail_in_ci
from tests.tiny_models import tiny_llama, tiny_tokenizer

# Head size 32 (vLLM's CPU attention takes 32 and up); with these offsets, at seed 1,
# greedy answers differ per prompt and end at different steps, and samples at T=1 end
# both by EOS and by the limit within 6 tokens (as the transformers tiny engine's do).
VLLM_TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "heads": 2,
    "shared_offset": 1.0,
    "eos_offset": 8.0,
}


OPEN_ENGINES: list[Any] = []


def require_vllm() -> None:
    """Skip the calling test where vLLM is not installed; fail it in CI instead."""
    if importlib.util.find_spec("vllm") is not None:
        return
    reason = (
        "vLLM is not installed in this Python: `make install-vllm`, then run "
        "`.venv-vllm/bin/python -m pytest -m vllm ...`"
    )
    skip_or_fail_in_ci(reason)


@cache
def _folder() -> Path:
    holder = tempfile.TemporaryDirectory(prefix="tiny-vllm-")
    atexit.register(holder.cleanup)
    return Path(holder.name)


@cache
def tiny_vllm_engine(seed: int) -> Any:
    """A vLLM engine over a tiny Llama of seed `seed` saved to a temp folder; one per seed
    per process (each costs a vLLM start: two processes, tens of seconds on this CPU)."""
    require_vllm()
    from engines.vllm import VLLMEngine

    folder = _folder() / f"seed-{seed}"
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, seed, **VLLM_TINY_SHAPE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    engine = VLLMEngine.load(str(folder), batch_size=2, kv_cache_gib=0.0625)
    OPEN_ENGINES.append(engine)
    return engine


def close_engines() -> None:
    """End the processes of every engine `tiny_vllm_engine` started."""
    while OPEN_ENGINES:
        OPEN_ENGINES.pop().close()
