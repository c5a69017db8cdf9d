"""A small LLaVA-style vision-language model that learns the `shapes` task, on CPU.

No VLM can be downloaded here, so one is assembled and trained locally:

- **vision encoder**: a CLIP ViT trained from scratch (`Recipe.image_size` pixels cut into
  `patch_size` patches, a few narrow layers); LLaVA's 'default' strategy drops its CLS
  token, so an image is (image_size / patch_size)^2 image tokens;
- **projector**: LLaVA's two-layer MLP (`multi_modal_projector`), vision width -> text width;
- **text model**: the given chat model's weights (SmolLM2-135M-Instruct by default), with an
  `<image>` token added to its tokenizer; LoRA on every linear layer of its decoder.

Training runs in two stages, both on the train images only and both with the items' yes/no
answers as the target:

1. **encoder**: the vision tower plus a throwaway linear head: one score per (colour,
   shape) pair for each of the states the projector reads, max-pooled over the patches (an
   object is there when some patch shows it); binary cross-entropy on each train question's
   pair, its answer the label; half the images mirrored left-right (every shape is
   symmetric about its vertical axis). LLaVA starts from a pretrained CLIP; nothing
   pretrained exists here, and a step of this stage costs a small fraction of a pass
   through the text model, so the encoder learns what is in an image cheaply first.
2. **VLM**: vision tower (lower learning rate), projector and the text model's LoRA,
   cross-entropy on the answer tokens only (the answer word and the end-of-turn token, so
   greedy decoding stops after it). A step takes a few images with all their questions;
   the prompt prefix they share (template, image tokens, "Is there a") runs once per image
   and its KV cache serves each question (`ImageBatch`: the same loss as full prompts, in
   less than half the text-model time). Every `eval_every` steps greedy answers on the
   validation images are scored; the state with the best validation accuracy is kept
   (ties: the earlier), restored at the end and its LoRA merged into the text weights.

Splits are by image: one `shapes` build whose images are cut, in order, into train,
validation and test, so an image's questions never span two splits. The chosen model is
scored on the test images (never seen in training or selection), then saved with
`save_pretrained` (model and processor) plus `vlm_training.json` (the recipe, metrics,
timings) into a cache folder that is written under a temp name and renamed at the end.

`python -m agents.vlm_training --help` runs it; `make vlm` trains the default one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn

from agents.config import StageConfig
from engines.loading import cache_root, ensure_default_model
from engines.vlm import chat_prompt
from tasks.base import Item
from tasks.shapes import COLOURS, SHAPES, build_shapes_task
from tasks.verifiers import yes_or_no

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECORD_FILE = "vlm_training.json"
IMAGE_TOKEN = "<image>"
PAIRS: tuple[str, ...] = tuple(f"{c} {k}" for c in COLOURS for k in SHAPES)  # 15 objects
ANSWER_WORDS = {"yes": "Yes", "no": "No"}  # how the model is taught to answer
TextModelName = Literal["tiny", "default"]
TextTraining = Literal["lora", "full", "frozen"]

# Wraps the text model's own chat template: message contents given as a list of parts
# ({"type": "image"} / {"type": "text", ...}, what `engines.vlm.chat_prompt` writes) become
# one string, the image as "<image>\n", before the original template runs unchanged. So a
# prompt is exactly what the text model was tuned on (SmolLM2's default system line
# included) with the image placeholder in front of the question.
CONTENT_TO_TEXT = (
    "{%- set ns = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string -%}{%- set text = m['content'] -%}"
    "{%- else -%}{%- set parts = namespace(text='') -%}"
    "{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'image' -%}{%- set parts.text = parts.text ~ '" + IMAGE_TOKEN + "\n' -%}"
    "{%- else -%}{%- set parts.text = parts.text ~ c['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = parts.text -%}{%- endif -%}"
    "{%- set ns.messages = ns.messages + [{'role': m['role'], 'content': text}] -%}"
    "{%- endfor -%}"
    "{%- set messages = ns.messages -%}"
)


# --------------------------------------------------------------------------- recipe


class Recipe(StageConfig):
    """Everything a training run does, fixed before it starts."""

    name: str = Field(description="Cache folder name, under models/ of the cache root.")
    text_model: TextModelName = Field(
        description="'default': SmolLM2-135M-Instruct; 'tiny': tests/tiny_models' random Llama."
    )
    seed: int = Field(default=0, description="Seeds initialisation and batch order.")
    task_seed: int = Field(default=0, description="Seed of the one `shapes` build.")
    train_images: int = Field(ge=1, description="Images (4 questions each) to train on.")
    val_images: int = Field(ge=1, description="Images that choose the checkpoint.")
    test_images: int = Field(ge=1, description="Held-out images scored once at the end.")
    questions_per_image: int = Field(default=4, ge=2, description="Questions per image.")
    image_size: int = Field(ge=48, description="Image side in pixels (the task's minimum: 48).")
    patch_size: int = Field(ge=2, description="ViT patch side in pixels.")
    vision_hidden: int = Field(ge=8, description="Vision encoder width.")
    vision_layers: int = Field(ge=1, description="Vision encoder layers.")
    vision_heads: int = Field(ge=1, description="Vision encoder attention heads.")
    encoder_steps: int = Field(ge=0, description="Stage-1 steps (vision tower + linear head).")
    encoder_batch: int = Field(ge=1, description="Images per stage-1 step.")
    encoder_lr: float = Field(gt=0, description="Stage-1 AdamW learning rate.")
    steps: int = Field(ge=1, description="Stage-2 optimizer steps (the VLM).")
    batch_images: int = Field(
        ge=1, description="Images per stage-2 step, each with all its questions."
    )
    warmup_steps: int = Field(ge=0, description="Linear warm-up steps of both stages.")
    lr_vision: float = Field(ge=0, description="Stage-2 learning rate of the vision tower.")
    lr_projector: float = Field(gt=0, description="Stage-2 learning rate of the projector.")
    lr_text: float = Field(
        ge=0, description="Stage-2 learning rate of the text model's LoRA ('full': weights)."
    )
    text_training: TextTraining = Field(
        description="'lora' (pretrained text model), 'full' (a random tiny one), or 'frozen'."
    )
    lora_rank: int = Field(default=16, ge=1, description="LoRA rank ('lora' only).")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha ('lora' only).")
    eval_every: int = Field(ge=1, description="Stage-2 steps between validation scores.")
    eval_batch_size: int = Field(default=32, ge=1, description="Questions per eval forward.")
    max_new_tokens: int = Field(default=4, ge=1, description="Greedy tokens per answer.")
    log_every: int = Field(default=10, ge=1, description="Steps between progress lines.")
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads during the run (None: torch's)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of patch_size="
                f"{self.patch_size}; pick sizes that divide (e.g. 64 and 8)"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError(
                f"vision_hidden={self.vision_hidden} does not split into vision_heads="
                f"{self.vision_heads}; use a width divisible by the head count"
            )
        if self.eval_every > self.steps:
            raise ValueError(
                f"eval_every={self.eval_every} > steps={self.steps}: the checkpoint would be "
                "chosen from the last step only; lower eval_every"
            )
        return self

    @property
    def image_tokens(self) -> int:
        """Image tokens per prompt: one per patch (the CLS token is dropped)."""
        return (self.image_size // self.patch_size) ** 2


# The default recipe, sized from measurements on this 2-core machine while another job held
# it (CPU-seconds of one torch thread under `nice`, so they do not depend on what the other
# job left us; README "A VLM for shapes" has the details):
# - stage 1: 1800 steps of 32 images reached 0.996 validation accuracy in 90 CPU-s. 48-px
#   images in 8-px patches (36 image tokens) scored higher than 64 px (0.94 at half the
#   steps) and cost the text model less; 16-px patches stayed near 0.87;
# - stage 2: SmolLM2-135M with this LoRA costs about 7.9 CPU-ms per token per training step
#   (8 prompts of 111 tokens: 7.0 CPU-s); a step of 3 images x 4 questions runs
#   3 x 64 prefix + 12 x 19 suffix tokens = 420, about 3.3 CPU-s, so ~1.9 s on two idle
#   cores; greedy scoring costs about 0.27 CPU-s a question.
# 540 steps, 6 validations of 192 questions and the 400-question test come to ~22 min on two
# idle cores (38 min were the second thread no help at all: `make vlm` caps training at 26).
# LoRA's learning rate is `agents.optimize`'s default for this same model; the projector,
# new, learns faster; the tower, already trained in stage 1, slower.
DEFAULT_RECIPE = Recipe(
    name="shapes-llava-smollm2",
    text_model="default",
    train_images=4000,
    val_images=48,
    test_images=100,
    image_size=48,
    patch_size=8,
    vision_hidden=64,
    vision_layers=4,
    vision_heads=4,
    encoder_steps=1800,
    encoder_batch=32,
    encoder_lr=3e-3,
    steps=540,
    batch_images=3,
    warmup_steps=30,
    lr_vision=5e-5,
    lr_projector=1e-3,
    lr_text=2e-4,
    text_training="lora",
    eval_every=90,
)

TINY_RECIPE = Recipe(
    name="shapes-llava-tiny",
    text_model="tiny",
    train_images=600,
    val_images=32,
    test_images=64,
    image_size=48,
    patch_size=8,
    vision_hidden=32,
    vision_layers=2,
    vision_heads=4,
    encoder_steps=900,
    encoder_batch=32,
    encoder_lr=3e-3,
    steps=1000,
    batch_images=4,
    warmup_steps=20,
    lr_vision=1e-4,
    lr_projector=2e-3,
    lr_text=1e-3,
    text_training="full",  # a random-init text model has nothing to preserve
    eval_every=200,
    eval_batch_size=64,
    threads=1,  # its matrices are too small for a second thread to pay
)

RECIPES: dict[str, Recipe] = {"default": DEFAULT_RECIPE, "tiny": TINY_RECIPE}
TINY_TEXT = {"layers": 2, "hidden_size": 64, "heads": 4}  # the tiny Llama's shape


# --------------------------------------------------------------------------- POPE scoring


class PopeRow(NamedTuple):
    """One scored answer: the yes/no it said (None: neither), the gold one, its type."""

    predicted: str | None
    gold: str
    kind: str


class PopeScore(BaseModel):
    """POPE's numbers over some rows; F1 takes "yes" as the positive class."""

    n: int
    accuracy: float
    f1: float | None  # None where the rows hold no gold "yes" (F1 is undefined there)
    yes_ratio: float  # share of answers that said yes
    unparsed: int  # answers with neither yes nor no (counted wrong)


def pope_score(rows: Sequence[PopeRow]) -> PopeScore:
    """Accuracy, F1 (yes positive), yes-ratio of `rows`; an empty list scores zeros.

    >>> rows = [PopeRow("yes", "yes", "present"), PopeRow("no", "yes", "present"),
    ...         PopeRow("yes", "no", "random"), PopeRow(None, "no", "random")]
    >>> s = pope_score(rows)
    >>> (s.n, s.accuracy, s.f1, s.yes_ratio, s.unparsed)
    (4, 0.25, 0.5, 0.5, 1)
    """
    n = len(rows)
    tp = sum(r.predicted == "yes" and r.gold == "yes" for r in rows)
    fp = sum(r.predicted == "yes" and r.gold != "yes" for r in rows)
    fn = sum(r.predicted != "yes" and r.gold == "yes" for r in rows)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else None
    return PopeScore(
        n=n,
        accuracy=sum(r.predicted == r.gold for r in rows) / n if n else 0.0,
        f1=f1,
        yes_ratio=(tp + fp) / n if n else 0.0,
        unparsed=sum(r.predicted is None for r in rows),
    )


def pope_scores(rows: Sequence[PopeRow]) -> dict[str, PopeScore]:
    """`overall` and one score per question type (sorted by name).

    >>> rows = [PopeRow("yes", "yes", "present"), PopeRow("no", "no", "adversarial"),
    ...         PopeRow("yes", "no", "random"), PopeRow("no", "no", "random")]
    >>> {k: (s.accuracy, s.f1) for k, s in pope_scores(rows).items()}
    {'overall': (0.75, 0.6666666666666666), 'adversarial': (1.0, None), 'present': (1.0, 1.0), 'random': (0.5, None)}
    """
    kinds = sorted({r.kind for r in rows})
    scores = {"overall": pope_score(rows)}
    scores.update({k: pope_score([r for r in rows if r.kind == k]) for k in kinds})
    return scores


def pope_rows(items: Sequence[Item], answers: Sequence[str]) -> list[PopeRow]:
    """Rows of `shapes` items and the model's answers; the type is `meta["sampling"]`."""
    return [
        PopeRow(yes_or_no(answer), item.answers[0], item.meta.get("sampling", "all"))
        for item, answer in zip(items, answers, strict=True)
    ]


@torch.inference_mode()
def generate_answers(
    model: nn.Module,
    processor: Any,
    items: Sequence[Item],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 4,
) -> list[str]:
    """Greedy answers to the items (image and prompt through the processor's chat template),
    `batch_size` per call, left-padded; the new tokens decoded without special tokens."""
    processor.tokenizer.padding_side = "left"
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        inputs = processor(
            images=[[item.image] for item in chunk],
            text=[chat_prompt(processor, item.prompt) for item in chunk],
            return_tensors="pt",
            padding=True,
        )
        out = model.generate(  # type: ignore[operator]
            **inputs,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        new = out[:, inputs["input_ids"].shape[1] :]  # (B, new tokens)
        answers += processor.tokenizer.batch_decode(new, skip_special_tokens=True)
    return answers


def evaluate_pope(
    model: nn.Module, processor: Any, items: Sequence[Item], *, batch_size: int = 32, **kw: int
) -> dict[str, PopeScore]:
    """Greedy answers to `items`, scored POPE's way per question type and overall."""
    was_training = model.training
    model.eval()
    try:
        answers = generate_answers(model, processor, items, batch_size=batch_size, **kw)
    finally:
        model.train(was_training)
    return pope_scores(pope_rows(items, answers))


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Splits:
    """Items of disjoint image sets."""

    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...]


def split_by_image(items: Sequence[Item], n_train: int, n_val: int, n_test: int) -> Splits:
    """The first `n_train` images' items (in order of first appearance) for train, the next
    `n_val` for validation, the next `n_test` for test: a group (one image) never spans two."""
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(item.group, len(order))
    if len(order) < n_train + n_val + n_test:
        raise ValueError(
            f"{len(order)} images for {n_train} + {n_val} + {n_test}; build more images"
        )
    bounds = (n_train, n_train + n_val, n_train + n_val + n_test)

    def part(lo: int, hi: int) -> tuple[Item, ...]:
        return tuple(item for item in items if lo <= order[item.group] < hi)

    return Splits(part(0, bounds[0]), part(bounds[0], bounds[1]), part(bounds[1], bounds[2]))


def build_splits(recipe: Recipe) -> Splits:
    """One seeded `shapes` build of train + val + test images, split by image."""
    total = recipe.train_images + recipe.val_images + recipe.test_images
    task = build_shapes_task(total, recipe.questions_per_image, recipe.task_seed, recipe.image_size)
    return split_by_image(task.items, recipe.train_images, recipe.val_images, recipe.test_images)


@dataclass(frozen=True)
class Encoded:
    """A split as tensors, built once: each image's pixels, each item's token ids."""

    pixels: torch.Tensor  # (N_img, 3, S, S) normalised by the image processor
    image_of_item: torch.Tensor  # (N,) row of `pixels` each item asks about
    prompts: list[list[int]]  # chat prompt ids, image tokens expanded
    answers: list[list[int]]  # answer word + end of turn
    pairs: torch.Tensor  # (N,) index in PAIRS of the object asked about
    labels: torch.Tensor  # (N,) 1.0 where the answer is yes
    kinds: list[str]  # question type (`meta["sampling"]`)

    def __len__(self) -> int:
        return len(self.prompts)

    @cached_property
    def items_of_image(self) -> list[list[int]]:
        """Item rows of each image, in item order."""
        rows: list[list[int]] = [[] for _ in range(self.pixels.shape[0])]
        for r, i in enumerate(self.image_of_item.tolist()):
            rows[i].append(r)
        return rows


def encode(items: Sequence[Item], processor: Any, chunk: int = 256) -> Encoded:
    """Tokenise the items' prompts (through the processor, so image tokens are expanded as
    at inference) and answers, and the pixels of each distinct image once."""
    rows: dict[str, int] = {}
    images: list[Any] = []
    for item in items:
        if item.group not in rows:
            rows[item.group] = len(images)
            images.append(item.image)
    prompts: list[list[int]] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        ids = processor(
            images=[[item.image] for item in part],
            text=[chat_prompt(processor, item.prompt) for item in part],
        )["input_ids"]
        prompts += [list(row) for row in ids]
    tokenizer = processor.tokenizer
    answers = [
        tokenizer(ANSWER_WORDS[item.answers[0]] + tokenizer.eos_token, add_special_tokens=False)[
            "input_ids"
        ]
        for item in items
    ]
    return Encoded(
        pixels=processor.image_processor(images, return_tensors="pt")["pixel_values"],
        image_of_item=torch.tensor([rows[item.group] for item in items]),
        prompts=prompts,
        answers=answers,
        pairs=torch.tensor([PAIRS.index(item.meta["shape"]) for item in items]),
        labels=torch.tensor([float(item.answers[0] == "yes") for item in items]),
        kinds=[item.meta.get("sampling", "all") for item in items],
    )


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every prompt shares: the chat template up to and including the
    image tokens, and the question's first words.

    >>> shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    first = prompts[0]
    length = min(len(p) for p in prompts)
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return length


@dataclass(frozen=True)
class ImageBatch:
    """Every question of a few images, the shared prompt prefix run once per image.

    The prefix (template, image tokens, the question's first words) is identical for every
    item, so it runs once per image with a KV cache, which is then repeated for the image's
    questions; each question's suffix and answer run on top of it, left-padded (the padding
    sits between prefix and suffix, masked, with position ids counting real tokens only, so
    every position and attention weight is what the full left-padded prompt would give)."""

    prefix_ids: torch.Tensor  # (I, P)
    pixel_values: torch.Tensor  # (I, 3, S, S)
    questions_per_image: int  # Q: items (N = I * Q) are grouped by image
    input_ids: torch.Tensor  # (N, T) suffix + answer, left-padded
    attention_mask: torch.Tensor  # (N, P + T) prefix then suffix
    position_ids: torch.Tensor  # (N, T)
    answer_mask: torch.Tensor  # (N, K) answer tokens among each row's last K


def image_batch(data: Encoded, images: Sequence[int], prefix: int, pad_id: int) -> ImageBatch:
    """The stage-2 batch of `images` (rows of `data.pixels`) and all their questions."""
    rows = [r for i in images for r in data.items_of_image[i]]
    per_image = {len(data.items_of_image[i]) for i in images}
    if len(per_image) != 1:
        raise ValueError(f"images hold {sorted(per_image)} questions; expected one count")
    seqs = [data.prompts[r][prefix:] + data.answers[r] for r in rows]
    width = max(len(s) for s in seqs)
    k = max(len(data.answers[r]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros(len(rows), width, dtype=torch.long)
    answer_mask = torch.zeros(len(rows), k, dtype=torch.bool)
    for b, (r, seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[b, width - len(seq) :] = torch.tensor(seq)
        suffix_mask[b, width - len(seq) :] = 1
        answer_mask[b, k - len(data.answers[r]) :] = True
    return ImageBatch(
        prefix_ids=torch.tensor([data.prompts[rows[0]][:prefix]] * len(images)),
        pixel_values=data.pixels[list(images)],
        questions_per_image=per_image.pop(),
        input_ids=input_ids,
        attention_mask=torch.cat([torch.ones(len(rows), prefix, dtype=torch.long), suffix_mask], 1),
        position_ids=prefix + (suffix_mask.cumsum(-1) - 1).clamp(min=0),
        answer_mask=answer_mask,
    )


def answer_loss(model: nn.Module, batch: ImageBatch) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens: the prefix forward (with the images) fills a
    KV cache, repeated per question; the suffix forward reads it, and the LM head runs on
    each row's last K+1 positions only (gradients flow through the cache to the prefix)."""
    prefix = model(
        input_ids=batch.prefix_ids,
        pixel_values=batch.pixel_values,
        attention_mask=torch.ones_like(batch.prefix_ids),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(batch.questions_per_image)  # (I, ...) -> (N, ...)
    k = batch.answer_mask.shape[1]
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=k + 1,
    ).logits  # (N, K+1, V)
    predicted = logits[:, :-1][batch.answer_mask]  # (answer tokens, V): t predicts t+1
    targets = batch.input_ids[:, -k:][batch.answer_mask]  # (answer tokens,)
    return nn.functional.cross_entropy(predicted.float(), targets)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at `total`.

    >>> [round(lr_factor(s, 2, 10), 2) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def batches(n: int, size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of `size` row indices from shuffled epochs: a row at most once per
    epoch (an epoch's remainder short of a batch is dropped; n < size gives all n)."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - size + 1 if n >= size else 1, size):
            yield order[start : start + size]


# --------------------------------------------------------------------------- model


def load_text_model(name: TextModelName) -> tuple[PreTrainedModel, Any]:
    """(causal LM, tokenizer) in fp32: the cached default model, or the tests' tiny Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "default":
        folder = ensure_default_model()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer
    # The tiny model is a test fixture (tests/tiny_models.py), imported only on this path and
    # by name, as benchmarks/ do, so the packages' type check does not reach into tests/.
    fixtures = importlib.import_module("tests.tiny_models")
    tokenizer = fixtures.tiny_tokenizer()
    return fixtures.tiny_llama(tokenizer, seed=0, **TINY_TEXT), tokenizer


def build_processor(tokenizer: Any, recipe: Recipe) -> Any:
    """A `LlavaProcessor` from local parts: the text tokenizer plus an `<image>` token (the
    tokenizer is changed in place), a CLIP image processor at the recipe's size, and the
    text model's chat template wrapped to place the image (`CONTENT_TO_TEXT`)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    side = recipe.image_size
    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tokenizer,
        patch_size=recipe.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLS, dropped by the 'default' strategy
        image_token=IMAGE_TOKEN,
        chat_template=CONTENT_TO_TEXT + tokenizer.chat_template,
    )


def build_vlm(text_model: PreTrainedModel, processor: Any, recipe: Recipe) -> Any:
    """A `LlavaForConditionalGeneration`: a seeded random CLIP vision tower, a random
    projector, and `text_model`'s weights (its embeddings grown by the `<image>` row)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    text_model.resize_token_embeddings(len(tokenizer))
    vision = CLIPVisionConfig(
        hidden_size=recipe.vision_hidden,
        intermediate_size=4 * recipe.vision_hidden,
        num_hidden_layers=recipe.vision_layers,
        num_attention_heads=recipe.vision_heads,
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        projection_dim=recipe.vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_model.config,
        image_token_index=processor.image_token_id,
        image_seq_length=recipe.image_tokens,
        vision_feature_layer=-1,  # the tower is trained for its last layer (stage 1)
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(recipe.seed)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text_model.model.state_dict())
    model.lm_head.load_state_dict(text_model.lm_head.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.float()


def vision_states(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, P, H_v): the tower's states the projector reads (feature layer, CLS dropped)."""
    config = model.config
    out = model.model.vision_tower(pixels, output_hidden_states=True)
    states = out.hidden_states[config.vision_feature_layer]  # (B, 1+P, H_v)
    return states[:, 1:] if config.vision_feature_select_strategy == "default" else states


# --------------------------------------------------------------------------- stage 1


def image_questions(data: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """(N_img, Q) pair index and label of each image's questions (Q = questions per image)."""
    n_images = data.pixels.shape[0]
    order = torch.argsort(data.image_of_item, stable=True)  # item rows grouped by image
    return data.pairs[order].view(n_images, -1), data.labels[order].view(n_images, -1)


def presence_logits(model: Any, head: nn.Linear, pixels: torch.Tensor) -> torch.Tensor:
    """(B, len(PAIRS)) one logit per object: a linear score of each patch state the
    projector reads, max-pooled over the patches (an object is there if a patch shows it)."""
    return head(vision_states(model, pixels)).amax(1)


@torch.no_grad()
def encoder_scores(model: Any, head: nn.Linear, data: Encoded) -> dict[str, PopeScore]:
    """POPE scores of the encoder's head on `data`'s questions (logit > 0 = yes)."""
    logits = torch.cat([presence_logits(model, head, p) for p in data.pixels.split(256)])
    said = (logits[data.image_of_item, data.pairs] > 0).tolist()  # (N,)
    gold = ["yes" if y else "no" for y in data.labels.bool().tolist()]
    rows = [
        PopeRow("yes" if s else "no", g, k) for s, g, k in zip(said, gold, data.kinds, strict=True)
    ]
    return pope_scores(rows)


def mirrored(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) with a random half of the images flipped left-right: every shape is
    symmetric about its vertical axis (the triangle points up), so the answers hold."""
    flip = torch.rand(pixels.shape[0], generator=generator) < 0.5  # (B,)
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def pretrain_encoder(
    model: Any, train: Encoded, val: Encoded, recipe: Recipe, deadline: float
) -> dict[str, PopeScore]:
    """Stage 1: the vision tower and a linear head learn each train question's answer from
    the image alone. Returns the head's validation scores."""
    tower = model.model.vision_tower
    head = nn.Linear(recipe.vision_hidden, len(PAIRS))
    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.encoder_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, recipe.warmup_steps, recipe.encoder_steps)
    )
    pairs, labels = image_questions(train)
    generator = torch.Generator().manual_seed(recipe.seed)
    draw = batches(train.pixels.shape[0], recipe.encoder_batch, generator)
    tower.train()
    for step in range(recipe.encoder_steps):
        rows = next(draw)
        logits = presence_logits(model, head, mirrored(train.pixels[rows], generator))  # (B, 15)
        asked = logits.gather(1, pairs[rows])  # (B, Q)
        loss = nn.functional.binary_cross_entropy_with_logits(asked, labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % (recipe.log_every * 5) == 0 or step + 1 == recipe.encoder_steps:
            log.info("encoder step %d/%d loss %.4f", step + 1, recipe.encoder_steps, loss.item())
        if time.monotonic() > deadline:
            log.warning("encoder stage stopped by the time budget at step %d", step + 1)
            break
    tower.eval()
    scores = encoder_scores(model, head, val)
    log.info("encoder validation (linear head): %s", describe(scores))
    return scores


# --------------------------------------------------------------------------- stage 2


def trainable_setup(model: Any, recipe: Recipe) -> tuple[Any, list[dict[str, Any]]]:
    """What stage 2 trains, per `text_training`, and AdamW parameter groups. Returns the
    model to call (a peft wrapper under 'lora', whose `merge_and_unload` gives the
    LLaVA model back) and the groups."""
    base = model.model
    text_params: list[nn.Parameter] = []
    if recipe.text_training == "lora":
        # LoRA, not full training: the 135M text weights keep their language (and the chat
        # format the prompts use) while low-rank updates on every decoder linear layer let
        # the question attend to the image tokens; the optimiser state stays small and a
        # step costs little more than frozen weights (activation gradients flow anyway).
        from peft import LoraConfig, get_peft_model

        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        lora = LoraConfig(
            r=recipe.lora_rank,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=0.0,
            target_modules=targets,
        )
        wrapped = get_peft_model(model, lora)  # freezes every base weight
        text_params = [p for n, p in model.named_parameters() if "lora_" in n]
    else:
        wrapped = model
        for p in [*base.language_model.parameters(), *model.lm_head.parameters()]:
            p.requires_grad_(recipe.text_training == "full")
        if recipe.text_training == "full":  # lm_head may be tied to the embeddings: dedupe
            every = [*base.language_model.parameters(), *model.lm_head.parameters()]
            text_params = list({id(p): p for p in every}.values())
    for p in [*base.vision_tower.parameters(), *base.multi_modal_projector.parameters()]:
        p.requires_grad_(True)
    groups = [
        {"params": [*base.vision_tower.parameters()], "lr": recipe.lr_vision},
        {"params": [*base.multi_modal_projector.parameters()], "lr": recipe.lr_projector},
        {"params": text_params, "lr": recipe.lr_text},
    ]
    return wrapped, [g for g in groups if g["params"]]


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every trainable parameter: the checkpoint stage 2 keeps in memory."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class TrainLog:
    """What stage 2 saw: per-eval history and the chosen checkpoint."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_step: int = -1
    best_accuracy: float = -1.0
    best_scores: dict[str, PopeScore] = field(default_factory=dict)
    steps_done: int = 0
    stopped_by_deadline: bool = False


def train_vlm(
    model: Any,
    processor: Any,
    train: Encoded,
    val_items: Sequence[Item],
    recipe: Recipe,
    deadline: float,
) -> tuple[Any, TrainLog]:
    """Stage 2: answer-token cross-entropy; validation every `eval_every` steps (and at the
    last one); the best-validation state restored and (LoRA) merged. Returns the plain
    LLaVA model and the log."""
    wrapped, groups = trainable_setup(model, recipe)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, recipe.warmup_steps, recipe.steps)
    )
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    draw = batches(train.pixels.shape[0], recipe.batch_images, generator)
    prefix = shared_prefix(train.prompts)
    if any(processor.image_token_id in p[prefix:] for p in train.prompts):
        raise ValueError("image tokens after the shared prompt prefix; put the image first")
    pad_id = processor.tokenizer.pad_token_id
    trace, best, losses = TrainLog(), trainable_state(model), []
    started = time.monotonic()
    model.train()
    for step in range(1, recipe.steps + 1):
        loss = answer_loss(model, image_batch(train, next(draw), prefix, pad_id))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        trace.steps_done = step
        if step % recipe.log_every == 0:
            seconds = (time.monotonic() - started) / step
            log.info(
                "step %d/%d loss %.4f (%.1f s/step with validation)",
                step,
                recipe.steps,
                sum(losses[-recipe.log_every :]) / recipe.log_every,
                seconds,
            )
        trace.stopped_by_deadline = time.monotonic() > deadline
        due = step % recipe.eval_every == 0 or step == recipe.steps or trace.stopped_by_deadline
        if due and _validate(model, processor, val_items, recipe, step, losses, trace):
            best = trainable_state(model)
        if trace.stopped_by_deadline:
            log.warning("training stopped by the time budget at step %d", step)
            break
    unknown = model.load_state_dict(best, strict=False).unexpected_keys
    if unknown:
        raise RuntimeError(f"checkpoint keys the model lacks: {unknown[:3]}")
    log.info(
        "kept the checkpoint of step %d (validation accuracy %.3f)",
        trace.best_step,
        trace.best_accuracy,
    )
    merged = wrapped.merge_and_unload() if recipe.text_training == "lora" else model
    return merged.eval(), trace


def _validate(
    model: Any,
    processor: Any,
    items: Sequence[Item],
    recipe: Recipe,
    step: int,
    losses: Sequence[float],
    trace: TrainLog,
) -> bool:
    """Scores the validation items, logs and records them; True when this step is the new
    best (strictly higher accuracy: ties keep the earlier checkpoint)."""
    scores = evaluate_pope(
        model,
        processor,
        items,
        batch_size=recipe.eval_batch_size,
        max_new_tokens=recipe.max_new_tokens,
    )
    accuracy = scores["overall"].accuracy
    recent = losses[-recipe.eval_every :]
    trace.history.append(
        {"step": step, "train_loss": sum(recent) / len(recent), "val": _plain(scores)}
    )
    log.info("step %d validation: %s", step, describe(scores))
    if accuracy <= trace.best_accuracy:
        return False
    trace.best_step, trace.best_accuracy, trace.best_scores = step, accuracy, scores
    return True


def describe(scores: Mapping[str, PopeScore]) -> str:
    """One line: accuracy per type, overall F1 and yes-ratio.

    >>> s = PopeScore(n=4, accuracy=0.75, f1=0.8, yes_ratio=0.5, unparsed=0)
    >>> describe({"overall": s, "present": s})
    'accuracy 0.750 (present 0.750), F1 0.800, yes-ratio 0.500'
    """
    overall = scores["overall"]
    kinds = ", ".join(f"{k} {s.accuracy:.3f}" for k, s in scores.items() if k != "overall")
    f1 = "n/a" if overall.f1 is None else f"{overall.f1:.3f}"
    return f"accuracy {overall.accuracy:.3f} ({kinds}), F1 {f1}, yes-ratio {overall.yes_ratio:.3f}"


def _plain(scores: Mapping[str, PopeScore]) -> dict[str, dict[str, Any]]:
    return {k: s.model_dump() for k, s in scores.items()}


class TrainingRecord(BaseModel):
    """What a run saved beside its model (`vlm_training.json`): recipe, scores, timings."""

    schema_version: int = SCHEMA_VERSION
    recipe: Recipe
    encoder_val: dict[str, PopeScore]  # stage 1's linear head on the validation questions
    best_step: int  # the stage-2 step whose state was saved
    steps_done: int
    stopped_by_deadline: bool
    val: dict[str, PopeScore]  # the chosen step's validation scores
    test: dict[str, PopeScore]  # the saved model on the held-out test images
    history: list[dict[str, Any]]  # per validation: step, mean train loss, scores
    seconds: dict[str, float]  # "encoder", "vlm", "test" (wall clock), "total"


def read_record(folder: Path) -> TrainingRecord:
    """The record a run saved in `folder`; another schema version is refused."""
    data = json.loads((folder / RECORD_FILE).read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{folder / RECORD_FILE} has schema_version {data.get('schema_version')}; this "
            f"code reads {SCHEMA_VERSION}: retrain with `python -m agents.vlm_training`"
        )
    return TrainingRecord.model_validate(data)


# --------------------------------------------------------------------------- the run


def default_folder(recipe: Recipe) -> Path:
    """Where a recipe's model is cached: `<cache root>/models/<name>`."""
    return cache_root() / "models" / recipe.name


def save_vlm(model: Any, processor: Any, record: TrainingRecord, target: Path) -> Path:
    """Model, processor and `vlm_training.json` written into a temp folder beside `target`,
    then renamed onto it (an older one is replaced): a killed run leaves no half folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / RECORD_FILE).write_text(record.model_dump_json(indent=2) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_vlm(folder: Path) -> tuple[Any, Any]:
    """(model, processor) of a saved folder, the model in fp32 and eval mode."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(folder)


def durations(stamps: Mapping[str, float]) -> dict[str, float]:
    """Seconds of each phase from clock stamps in order (the first is the start), and total.

    >>> durations({"start": 10.0, "encoder": 11.5, "vlm": 14.0})
    {'encoder': 1.5, 'vlm': 2.5, 'total': 4.0}
    """
    times = list(stamps.values())
    phases = {name: round(t - times[i], 1) for i, (name, t) in enumerate(list(stamps.items())[1:])}
    return phases | {"total": round(times[-1] - times[0], 1)}


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block and restored after (None: as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    recipe: Recipe,
    out: Path | None = None,
    minutes: float | None = None,
    parts: tuple[PreTrainedModel, Any] | None = None,
) -> TrainingRecord:
    """Build, train (both stages), choose, test and save; returns the record it saved.

    `minutes` caps the training time of both stages (the final scoring and saving come
    after); `parts` gives the (text model, tokenizer) instead of `recipe.text_model`'s."""
    with torch_threads(recipe.threads):
        stamps = {"start": time.monotonic()}
        deadline = stamps["start"] + 60 * minutes if minutes else math.inf
        text_model, tokenizer = parts or load_text_model(recipe.text_model)
        processor = build_processor(tokenizer, recipe)
        model = build_vlm(text_model, processor, recipe)
        splits = build_splits(recipe)
        train, val = encode(splits.train, processor), encode(splits.val, processor)
        log.info(
            "%s: %d train / %d val / %d test questions, prompts of %d tokens (%d image)",
            recipe.name, len(splits.train), len(splits.val), len(splits.test),
            len(train.prompts[0]), recipe.image_tokens,
        )  # fmt: skip
        encoder = pretrain_encoder(model, train, val, recipe, deadline)
        stamps["encoder"] = time.monotonic()
        model, trace = train_vlm(model, processor, train, splits.val, recipe, deadline)
        stamps["vlm"] = time.monotonic()
        test = evaluate_pope(
            model, processor, splits.test, batch_size=recipe.eval_batch_size,
            max_new_tokens=recipe.max_new_tokens,
        )  # fmt: skip
        stamps["test"] = time.monotonic()
        log.info("test (held-out images): %s", describe(test))
        record = TrainingRecord(
            recipe=recipe,
            encoder_val=encoder,
            best_step=trace.best_step,
            steps_done=trace.steps_done,
            stopped_by_deadline=trace.stopped_by_deadline,
            val=trace.best_scores,
            test=test,
            history=trace.history,
            seconds=durations(stamps),
        )
        folder = save_vlm(model, processor, record, out or default_folder(recipe))
        log.info("saved to %s, %.0f s in all", folder, time.monotonic() - stamps["start"])
        return record


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agents.vlm_training",
        description="Train a small LLaVA-style VLM on the `shapes` task (CPU, fp32) and cache "
        "it; progress goes to stderr.",
    )
    parser.add_argument(
        "--text-model",
        choices=sorted(RECIPES),
        default="default",
        help="text model and its recipe: 'default' (SmolLM2-135M-Instruct, "
        "about 30 min on 2 cores) or 'tiny' (a random tiny Llama, about a minute)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to save into (default: <cache>/models/<recipe name>)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="cap on training time; the best checkpoint so far is kept",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the VLM steps")
    parser.add_argument(
        "--images", type=int, default=None, help="override the number of train images"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    recipe = RECIPES[args.text_model]
    changes: dict[str, int] = {}
    if args.steps is not None:
        changes["steps"] = args.steps
        changes["eval_every"] = min(recipe.eval_every, args.steps)
    if args.images is not None:
        changes["train_images"] = args.images
    if changes:
        recipe = Recipe(**{**recipe.model_dump(), **changes})
    record = run(recipe, args.out, args.minutes)
    summary = {"best_step": record.best_step, "test": _plain(record.test)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
