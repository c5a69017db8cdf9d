"""Ray in tests: one local Ray of 2 CPUs per test module, skipped where Ray is absent and
failed in CI (CI=true), where `make test` installs the `cluster` extra."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.ci_rules import skip_or_fail_in_ci
from tests.tiny_models import tiny_llama, tiny_tokenizer

# Cross-process float tolerances. A Ray actor runs torch at 1 thread, the test process at 2,
# so their floats differ in the last digits; token ids, finish reasons, verdicts and
# decisions must still be equal. `python -m benchmarks.float_drift` measured the largest
# absolute difference from 2 threads on this CPU's own kernels over 1 thread and over
# ATEN_CPU_CAPABILITY=default (no vector kernels), on the tiny model's workload (2-core AMD
# EPYC, AVX512, 2026-12-06); each tolerance is that, times at most 10.
LOGPROB_TOLERANCE = 2e-5  # token log-probabilities and entropies: measured 3.8e-6
STATE_TOLERANCE = 2e-5  # prefill hidden states (query token, prompt mean): measured 3.3e-6
RISK_TOLERANCE = 5e-5  # a risk summed over the 16-wide query token: measured 7.6e-6


def require_ray() -> None:
    """Skip the calling test where Ray is not installed; fail it in CI instead."""
    if importlib.util.find_spec("ray") is not None:
        return
    reason = "Ray is not installed in this Python: pip install -e '.[cluster]'"
    skip_or_fail_in_ci(reason)


def local_ray() -> Iterator[None]:
    """A module fixture's body: a local Ray of 2 CPUs (no dashboard), shut down after."""
    require_ray()
    import ray

    from engines.cluster import connect

    connect(None, num_cpus=2)
    yield
    ray.shutdown()


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """The tiny Llama of `seed` and its tokenizer as a folder any process can load."""
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model_folder() -> Path:
    """The tiny engine's model (seed 0) saved once per machine user, for processes that
    load it by path (Ray actors and training workers); written aside, then renamed."""
    folder = Path(tempfile.gettempdir()) / f"autodidact-tiny-llama-{os.getuid()}"
    if not (folder / "config.json").is_file():
        scratch = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=folder.parent))
        save_tiny_model(scratch / "model")
        with contextlib.suppress(OSError):  # another process saved it first
            os.replace(scratch / "model", folder)
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
