"""The vision-language engine: a transformers image-text model (LLaVA, SmolVLM, ...) and its
processor, answering (image, question) pairs with the same `Sample` records as the text
engines (per-token logprob and entropy under the raw distribution, finish reason).

    engine = VLMEngine.load(folder)                   # a folder whose config has a vision_config
    engine.generate(prompts, images, SamplingParams(max_new_tokens=4))

Its prefill features (three families) are read by `probes.vlm.extract_vlm_features` on
`engine.model` and `engine.processor`; an engine does not import probes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from engines.base import Generation, ProgressFn, Sample, SamplingParams
from engines.hf import end_token_ids, set_cpu_threads, weights_fingerprint

Image = Any  # a PIL image
# entered around each batch's generation with (model, batch); yields what to call after it
Watch = Callable[[Any, dict[str, torch.Tensor]], AbstractContextManager[Callable[[], Any]]]


class VLMFolderError(ValueError):
    """A folder that holds no vision-language model; the message says what it holds."""


def is_vlm_folder(path: str | Path) -> bool:
    """True when `path` is a model folder whose config names a vision tower."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return "vision_config" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def chat_prompt(processor: Any, prompt: str) -> str:
    """One user turn of an image then the prompt, through the processor's chat template,
    ending where the assistant's answer would start."""
    if not getattr(processor, "chat_template", None):
        raise VLMFolderError(
            f"{type(processor).__name__} has no chat template; pass format_prompt= (a function "
            "that writes the image placeholder and the prompt)"
        )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


class VLMEngine:
    """(image, question) pairs in, `Generation`s out; fp32 on CPU."""

    def __init__(self, model: Any, processor: Any, *, name: str = "vlm", batch_size: int = 16):
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.name = name
        self.batch_size = batch_size
        self.num_layers = int(model.config.get_text_config().num_hidden_layers) + 1

    @classmethod
    def load(cls, folder: str | Path) -> VLMEngine:
        """The model of a saved folder (`save_pretrained` of model and processor)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not is_vlm_folder(folder):
            raise VLMFolderError(
                f"{folder} holds no vision-language model (no config.json with a vision_config)"
            )
        set_cpu_threads()
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        return cls(model, AutoProcessor.from_pretrained(folder), name=Path(folder).name)

    @cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    def format_prompt(self, prompt: str) -> str:
        return chat_prompt(self.processor, prompt)

    def inputs(self, prompts: Sequence[str], images: Sequence[Image]) -> dict[str, torch.Tensor]:
        """The processor's batch of one image per prompt, left-padded."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one each")
        return dict(
            self.processor(
                images=[[image] for image in images],
                text=[self.format_prompt(p) for p in prompts],
                return_tensors="pt",
                padding=True,
            )
        )

    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Image],
        params: SamplingParams,
        *,
        on_progress: ProgressFn | None = None,
    ) -> list[Generation]:
        """`params.n` samples per (prompt, image), greedy or seeded sampling, in batches."""
        generations, _ = self.generate_watched(prompts, images, params, on_progress=on_progress)
        return generations

    @torch.inference_mode()
    def generate_watched(
        self,
        prompts: Sequence[str],
        images: Sequence[Image],
        params: SamplingParams,
        watch: Watch | None = None,
        *,
        on_progress: ProgressFn | None = None,
    ) -> tuple[list[Generation], list[Any]]:
        """`generate`, with `watch(model, batch)` entered around each batch's generation:
        a context manager that yields a function, called once the batch is generated, whose
        results (one per batch) come back beside the generations. A probe reads the
        prefill's hidden states this way (`probes.vlm.prefill_reader`), inside the answer."""
        generations: list[Generation] = []
        watched: list[Any] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            batch = self.inputs(prompts[chunk], images[chunk])
            with watch(self.model, batch) if watch else nullcontext(None) as reader:
                generations += self._generate(prompts[chunk], batch, params, start)
            if reader is not None:
                watched.append(reader())
            if on_progress:
                on_progress(len(generations), len(prompts))
        return generations, watched

    def _generate(
        self,
        prompts: Sequence[str],
        batch: dict[str, torch.Tensor],
        params: SamplingParams,
        offset: int,
    ) -> list[Generation]:
        copies = 1 if params.greedy else params.n
        if not params.greedy:
            torch.manual_seed(params.seed + offset)
        out = self.model.generate(
            **batch,
            do_sample=not params.greedy,
            temperature=params.temperature if not params.greedy else None,
            top_p=params.top_p if not params.greedy else None,
            top_k=None,
            num_return_sequences=copies,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[:, batch["input_ids"].shape[1] :]  # (B*copies, T)
        logits = torch.stack(out.logits, dim=1).float()  # (B*copies, T, V) raw
        ends = end_token_ids(self.model, self.processor.tokenizer)
        samples = [
            self._sample(row, step_logits, ends)
            for row, step_logits in zip(new.tolist(), logits, strict=True)
        ]
        return [
            Generation(prompt, self._copies(samples[i * copies : (i + 1) * copies], params))
            for i, prompt in enumerate(prompts)
        ]

    @staticmethod
    def _copies(drawn: list[Sample], params: SamplingParams) -> list[Sample]:
        return drawn * params.n if params.greedy else drawn

    def _sample(self, token_ids: list[int], logits: torch.Tensor, ends: set[int]) -> Sample:
        """One row's tokens up to and including its first end token (of `ends`), with their
        raw logprob and the entropy of each step's distribution."""
        length = next((i + 1 for i, token in enumerate(token_ids) if token in ends), None)
        kept = token_ids[: length or len(token_ids)]
        logp = torch.log_softmax(logits[: len(kept)], dim=-1)  # (T, V)
        chosen = logp.gather(1, torch.tensor(kept).unsqueeze(1)).squeeze(1)
        entropy = -(logp.exp() * logp).sum(-1)
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
        return Sample(
            text=str(text).strip(),
            token_ids=kept,
            logprobs=chosen.tolist(),
            entropies=entropy.tolist(),
            finish_reason="stop" if length else "length",
        )
