"""The transformers engine: batched, seeded generation that captures its own prefill."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from engines.base import (
    Generation,
    ProgressFn,
    PromptStates,
    RiskFn,
    Sample,
    SamplingParams,
    score_risk,
)
from engines.constrained import TokenFilter, json_schema_filter
from engines.decoding import DecodedRow, decode, prefill, prompt_positions
from engines.hooks import StopForward, capture_prefill, decoder_layers
from engines.loading import resolve_model


def physical_cores() -> int:
    """Physical cores (hyper-threads share one core's FPU, so more threads only contend)."""
    try:
        pairs = set()
        physical = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                physical = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                pairs.add((physical, core))
        return max(1, min(len(pairs), os.cpu_count() or 1))
    except OSError:
        return max(1, os.cpu_count() or 1)


def cpu_threads() -> int:
    """Torch threads on CPU: `OMP_NUM_THREADS` when the user set it, else the physical
    cores."""
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    return int(wanted) if wanted.isdigit() and int(wanted) > 0 else physical_cores()


def set_cpu_threads() -> None:
    if not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads())


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the weights (names, shapes, bytes): changes with any update."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HFEngine:
    """`Engine` over a transformers causal LM and its tokenizer."""

    captures_prefill = True

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "model",
        use_chat_template: bool = True,
        batch_size: int = 32,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name
        self.use_chat_template = use_chat_template and tokenizer.chat_template is not None
        self.batch_size = batch_size
        self.num_layers = len(decoder_layers(model))

    @classmethod
    def load(cls, name_or_path: str, **kwargs: object) -> HFEngine:
        source = resolve_model(name_or_path)
        set_cpu_threads()
        tokenizer = AutoTokenizer.from_pretrained(source.path)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
        model.to(default_device())  # type: ignore[arg-type]
        return cls(model, tokenizer, name=source.name, **kwargs)  # type: ignore[arg-type]

    @cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    def format_prompt(self, prompt: str) -> str:
        if not self.use_chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )  # type: ignore[return-value]

    def _encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        texts = [self.format_prompt(p) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    @torch.inference_mode()
    def hidden_states(
        self,
        prompts: Sequence[str],
        *,
        until_layer: int | None = None,
        on_progress: ProgressFn | None = None,
    ) -> list[PromptStates]:
        """Prefill-only: runs the decoder without the LM head, so no vocabulary logits;
        with `until_layer`, only up to that layer (the states hold layers 0..until_layer)."""
        states: list[PromptStates] = []
        decoder = self.model.get_decoder()
        for start in range(0, len(prompts), self.batch_size):
            batch = self._encode(prompts[start : start + self.batch_size])
            mask = batch["attention_mask"]
            with (
                capture_prefill(self.model, mask, until_layer=until_layer) as capture,
                contextlib.suppress(StopForward),
            ):
                decoder(
                    input_ids=batch["input_ids"],
                    attention_mask=mask,
                    position_ids=prompt_positions(mask),
                    use_cache=False,
                )
            states += capture.prompt_states()
            if on_progress:
                on_progress(len(states), len(prompts))
        return states

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        generations: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            generator = torch.Generator(self.model.device).manual_seed(params.seed + start)
            generations += self._generate_batch(chunk, params, capture, generator)
            if on_progress:
                on_progress(len(generations), len(prompts))
        return score_risk(generations, risk_fn)

    def _generate_batch(
        self,
        prompts: list[str],
        params: SamplingParams,
        capture: bool,
        generator: torch.Generator,
    ) -> list[Generation]:
        batch = self._encode(prompts)
        mask = batch["attention_mask"]
        stop, n = list(params.stop), params.n
        copies = 1 if params.greedy else n  # greedy samples are identical: decode once, copy
        with capture_prefill(self.model, mask) if capture else nullcontext() as prefill_capture:
            logits, cache = prefill(self.model, batch["input_ids"], mask)
        end_ids = end_token_ids(self.model, self.tokenizer)
        rows = decode(
            self.model,
            logits,
            cache,
            mask,
            copies=copies,
            sampling=params,
            end_ids=end_ids,
            generator=generator,
            is_stopped=self._stop_check(stop) if stop else None,
            allowed=self._schema_filter(params, batch, end_ids, copies),
        )
        samples = [self._sample(row, stop) for row in rows]
        states: list[PromptStates | None] = [None] * len(prompts)
        if prefill_capture is not None:
            states = list(prefill_capture.prompt_states())
        generations = []
        for i, prompt in enumerate(prompts):
            drawn = samples[i * copies : (i + 1) * copies]
            generations.append(Generation(prompt, drawn * n if params.greedy else drawn, states[i]))
        return generations

    def _schema_filter(
        self,
        params: SamplingParams,
        batch: dict[str, torch.Tensor],
        end_ids: set[int],
        copies: int,
    ) -> TokenFilter | None:
        """The rows' allowed tokens under `params.json_schema` (None: unconstrained)."""
        if params.json_schema is None:
            return None
        prompts = [
            ids[mask.bool()].tolist()  # left padding dropped
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        ]
        return json_schema_filter(self.tokenizer, end_ids, params.json_schema, prompts, copies)

    def _stop_check(self, stop: list[str]) -> Callable[[list[int]], bool]:
        def stopped(token_ids: list[int]) -> bool:
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            return any(marker in text for marker in stop)

        return stopped

    def _sample(self, row: DecodedRow, stop: list[str]) -> Sample:
        text = str(self.tokenizer.decode(row.token_ids, skip_special_tokens=True))
        finish = "stop" if row.stopped else "length"
        for marker in stop:
            cut = text.find(marker)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Sample(
            text=text.strip(),
            token_ids=row.token_ids,
            logprobs=row.logprobs,
            entropies=row.entropies,
            finish_reason=finish,  # type: ignore[arg-type]
        )


def end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def load_model(name_or_path: str, **kwargs: object) -> HFEngine:
    """Load a model by name or path as an engine (default: SmolLM2-135M-Instruct)."""
    return HFEngine.load(name_or_path, **kwargs)
