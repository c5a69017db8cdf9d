"""Pre-generation features of vision-language models: one prefill forward, three families.

For a batch of (image, prompt) examples, one forward pass of the model's base module (no
LM head, so no vocabulary logits; no cache; no generation) yields, per example:

- `visual` (H_v,): the vision encoder's output, mean-pooled over the image's patches (all
  crops/tiles the model uses), before it is projected into the text model and fused with
  text. Read by a hook on:
    LLaVA             input of `multi_modal_projector` (tower states at `vision_feature_layer`,
                      CLS dropped under the 'default' strategy)
    Gemma-3           input of `multi_modal_projector` (SigLIP last hidden state)
    Qwen2.5-VL        input of `visual.merger` (ViT blocks' output, before the patch merger)
    Llama-3.2-Vision  input of `multi_modal_projector` (vision model output: final and
                      intermediate layers concatenated), real tiles only (`aspect_ratio_mask`)
    Phi-4-multimodal  `embed_tokens_extend.image_embed.img_processor` hidden states at
                      `vision_config.feature_layer`, used crops' valid patches only
    Idefics3/SmolVLM  input of `connector` (vision model last hidden state per crop)
- `vision_tokens` (L+1, H): per decoder layer, the mean hidden state over the image-token
  positions, found as `input_ids == image_token_id` (the config's id), never from offsets.
  Llama-3.2-Vision (Mllama) has no image positions in its decoder: vision enters through
  cross-attention layers. Its `vision_tokens` are: row 0, the projected vision states those
  layers attend to (output of `multi_modal_projector`, mean over the real tiles' patches);
  row i for each cross-attention layer (i = its index + 1), that layer's cross-attention
  read (the `cross_attn` output, before the tanh gate) averaged over the prompt positions
  that attend to an image; other rows are zero. `notes["vision_tokens_layers"]` lists the
  rows that are defined, and only those are capture points.
- `query_token` (L+1, H): per decoder layer, the hidden state of the last prompt token.
  Inputs must be left-padded, so the last position is the last prompt token.

Layer convention (as `engines.base`): index 0 is the input of the first decoder layer, i.e.
the embedding output after the image features are merged into it (HF's `hidden_states[0]`),
index i the output of decoder layer i (before the final norm). Capture points are named
`layer.{i}.query_token`, `layer.{i}.vision_tokens`, and `visual`. All hooks are registered in
a context manager that removes them in `finally`.

Position ids are those `generate` gives the prefill (the attention mask's cumulative sum for
1-D rotary families, the model's own multimodal rope index for Qwen2.5-VL), so a prompt's
features do not depend on how much left padding its batch needed.

Known transformers 5.19 quirk (Phi-4-multimodal): its SigLIP attention has `is_causal=True`,
so under SDPA the image encoder runs causally when no image in the batch has a padded patch
or crop, and bidirectionally otherwise; its features then depend on the batch's padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engines.hooks import Hook, hidden_of, hooked
from engines.vlm import chat_prompt

VLM_FEATURE_KINDS = ("visual", "vision_tokens", "query_token")  # text kinds: engines.base
Inputs = Mapping[str, Any]


class VLMError(ValueError):
    """Inputs or model the VLM feature extractor cannot use; the message says the fix."""


@dataclass(frozen=True)
class VLMFeatures:
    """Features of one batch; `notes` says where each family comes from."""

    visual: torch.Tensor  # (B, H_v) vision encoder output, mean-pooled, before fusion
    vision_tokens: torch.Tensor  # (B, L+1, H)
    query_token: torch.Tensor  # (B, L+1, H)
    notes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.query_token.shape[0]

    def feature(self, kind: str) -> torch.Tensor:
        if kind not in VLM_FEATURE_KINDS:
            raise ValueError(
                f"unknown VLM feature kind {kind!r}; expected one of {VLM_FEATURE_KINDS}"
            )
        return getattr(self, kind)  # type: ignore[no-any-return]

    def capture_points(self) -> dict[str, torch.Tensor]:
        """Every capture point as `name -> (B, H)`: `visual`, `layer.{i}.vision_tokens`
        (only the layers listed in `notes["vision_tokens_layers"]`), `layer.{i}.query_token`."""
        points = {"visual": self.visual}
        for i in self.notes.get("vision_tokens_layers", range(self.vision_tokens.shape[1])):
            points[f"layer.{i}.vision_tokens"] = self.vision_tokens[:, i]
        for i in range(self.query_token.shape[1]):
            points[f"layer.{i}.query_token"] = self.query_token[:, i]
        return points


def concat_features(parts: Sequence[VLMFeatures]) -> VLMFeatures:
    """Batches joined along the example axis (their notes must agree)."""
    if not parts:
        raise VLMError("no feature batches to join")
    return VLMFeatures(
        visual=torch.cat([p.visual for p in parts]),
        vision_tokens=torch.cat([p.vision_tokens for p in parts]),
        query_token=torch.cat([p.query_token for p in parts]),
        notes=parts[0].notes,
    )


# --------------------------------------------------------------------------- families


@dataclass
class _Tap:
    """What the hook on a family's visual module saw, one entry per call."""

    args: list[tuple[Any, ...]] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)

    def one(self) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        if len(self.outputs) != 1:
            raise VLMError(
                f"the vision module ran {len(self.outputs)} times in one forward; expected once "
                "(images only: video inputs are not supported)"
            )
        return self.args[0], self.kwargs[0], self.outputs[0]


# (tap, batch inputs, image tokens per example (B,), model config) -> (B, H_v)
PoolVisual = Callable[[_Tap, Inputs, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class Family:
    """Where one VLM family keeps what the features need, relative to its base model."""

    name: str
    decoder: str  # path of the module holding the decoder's `layers` ("" = the base model)
    visual_module: str  # path of the module hooked for `visual`
    visual: str  # what `visual` is, for notes and docs
    vision_tokens: str  # what `vision_tokens` is
    pool_visual: PoolVisual
    rope_1d: bool = True  # position ids from the attention mask (else the model derives them)
    cross_attention: bool = False  # vision enters through cross-attention layers (Mllama)


def _units_to_examples(
    tokens_per_unit: torch.Tensor, tokens_per_example: torch.Tensor
) -> torch.Tensor:
    """Example index of each vision unit (image or crop), given that the model scatters the
    units' tokens, in order, into the batch's image-token positions, row by row.

    >>> _units_to_examples(torch.tensor([4, 4, 4]), torch.tensor([8, 4])).tolist()
    [0, 0, 1]
    """
    if int(tokens_per_unit.sum()) != int(tokens_per_example.sum()):
        raise VLMError(
            f"the images give {int(tokens_per_unit.sum())} tokens but input_ids hold "
            f"{int(tokens_per_example.sum())} image tokens; build the inputs with the model's "
            "processor (or check the image token id)"
        )
    starts = torch.cumsum(tokens_per_unit, 0) - tokens_per_unit  # (N,) first slot of each unit
    return torch.searchsorted(torch.cumsum(tokens_per_example, 0), starts, right=True)


def _mean_by_example(
    units: Sequence[torch.Tensor], example_of_unit: torch.Tensor, batch: int
) -> torch.Tensor:
    """(B, H_v): each example's mean over the patch vectors of all its units (P_u, H_v)."""
    width = units[0].shape[-1]
    sums = torch.zeros(batch, width)
    counts = torch.zeros(batch, 1)
    for unit, b in zip(units, example_of_unit.tolist(), strict=True):
        sums[b] += unit.float().sum(0).cpu()
        counts[b] += unit.shape[0]
    return sums / counts.clamp(min=1)


def _pool_projector_input(
    tap: _Tap, inputs: Inputs, per_example: torch.Tensor, config: Any
) -> torch.Tensor:
    """Projector input (N, P, H_v) of N images/crops and output (N, P', H): unit n covers P'
    image tokens."""
    args, _, output = tap.one()
    units = args[0]  # (N, P, H_v)
    tokens = torch.full((units.shape[0],), output.shape[1], dtype=torch.long)
    return _mean_by_example(list(units), _units_to_examples(tokens, per_example), len(per_example))


def _pool_qwen_merger_input(
    tap: _Tap, inputs: Inputs, per_example: torch.Tensor, config: Any
) -> torch.Tensor:
    """Merger input (sum_k t*h*w, H_v): image k's patches are one contiguous segment (the
    window permutation stays inside an image) and become t*h*w / merge^2 tokens."""
    args, _, _ = tap.one()
    patches = args[0]  # (S, H_v)
    grid = torch.as_tensor(inputs["image_grid_thw"]).cpu()  # (K, 3)
    sizes = grid.prod(-1)  # (K,) patches per image
    units = list(torch.split(patches, sizes.tolist()))
    example = _units_to_examples(sizes // config.vision_config.spatial_merge_size**2, per_example)
    return _mean_by_example(units, example, len(per_example))


def _pool_mllama(tap: _Tap, inputs: Inputs, per_example: torch.Tensor, config: Any) -> torch.Tensor:
    """Projector input (B, images, tiles, patches, H_v), over the real tiles only."""
    args, _, _ = tap.one()
    return _masked_tile_mean(args[0], inputs["aspect_ratio_mask"])


def _masked_tile_mean(states: torch.Tensor, aspect_ratio_mask: torch.Tensor) -> torch.Tensor:
    """(B, images, tiles, patches, D) -> (B, D), mean over patches of tiles the mask keeps."""
    mask = torch.as_tensor(aspect_ratio_mask).to(states.device, torch.float32)  # (B, I, T)
    weights = mask[..., None, None]  # (B, I, T, 1, 1)
    total = (states.float() * weights).sum((1, 2, 3))  # (B, D)
    count = (weights.sum((1, 2, 3)) * states.shape[3]).clamp(min=1)  # (B, 1)
    return (total / count).cpu()


def _pool_phi4(tap: _Tap, inputs: Inputs, per_example: torch.Tensor, config: Any) -> torch.Tensor:
    """Image encoder states at the configured feature layer (B*crops, P, H_v), over the
    crops the model uses (global + sub-crops, from `image_sizes`) and their valid patches."""
    _, kwargs, output = tap.one()
    states = output.hidden_states[config.vision_config.feature_layer]  # (B*C, P, H_v)
    batch = len(per_example)
    states = states.reshape(batch, -1, *states.shape[1:])  # (B, C, P, H_v)
    patch_mask = kwargs.get("patch_attention_mask")
    if patch_mask is None:
        mask = torch.ones(states.shape[:3], device=states.device)
    else:
        mask = patch_mask.reshape(batch, states.shape[1], -1).to(states.device, torch.float32)
    crop = config.vision_config.crop_size
    sizes = torch.as_tensor(inputs["image_sizes"]).reshape(batch, 2)
    used = 1 + (sizes[:, 0] // crop) * (sizes[:, 1] // crop)  # (B,) global + sub-crops
    keep = torch.arange(states.shape[1])[None, :] < used[:, None]  # (B, C)
    mask = mask * keep.to(mask.device, mask.dtype)[..., None]  # (B, C, P)
    total = (states.float() * mask[..., None]).sum((1, 2))
    return (total / mask.sum((1, 2))[:, None].clamp(min=1)).cpu()


_PROJECTOR_VISUAL = "input of `multi_modal_projector`: the vision tower's {what}"
_DECODER_VISION_TOKENS = (
    "decoder hidden states at the positions where input_ids == image_token_id, mean per layer"
)
_MLLAMA_VISION_TOKENS = (
    "row 0: the projected vision states the cross-attention layers read (output of "
    "`multi_modal_projector`), mean over the real tiles' patches; row i+1 for each "
    "cross-attention layer i: its cross-attention read (`cross_attn` output, before the tanh "
    "gate), mean over the prompt positions that attend to an image; rows of self-attention "
    "layers are zero (no vision there); `notes['vision_tokens_layers']` lists the defined rows"
)

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "llava",
            decoder="language_model",
            visual_module="multi_modal_projector",
            visual=_PROJECTOR_VISUAL.format(
                what="hidden states at `vision_feature_layer` (CLS dropped with the 'default' "
                "strategy)"
            ),
            vision_tokens=_DECODER_VISION_TOKENS,
            pool_visual=_pool_projector_input,
        ),
        Family(
            "gemma3",
            decoder="language_model",
            visual_module="multi_modal_projector",
            visual=_PROJECTOR_VISUAL.format(what="last hidden state (SigLIP, post-layernorm)"),
            vision_tokens=_DECODER_VISION_TOKENS,
            pool_visual=_pool_projector_input,
        ),
        Family(
            "qwen2_5_vl",
            decoder="language_model",
            visual_module="visual.merger",
            visual="input of `visual.merger`: the ViT blocks' output per patch, before the "
            "patch merger projects it to the text width",
            vision_tokens=_DECODER_VISION_TOKENS,
            pool_visual=_pool_qwen_merger_input,
            rope_1d=False,
        ),
        Family(
            "mllama",
            decoder="language_model",
            visual_module="multi_modal_projector",
            visual="input of `multi_modal_projector`: the vision model's output (final and "
            "intermediate layers concatenated), mean over the real tiles' patches",
            vision_tokens=_MLLAMA_VISION_TOKENS,
            pool_visual=_pool_mllama,
            cross_attention=True,
        ),
        Family(
            "phi4_multimodal",
            decoder="",
            visual_module="embed_tokens_extend.image_embed.img_processor",
            visual="`embed_tokens_extend.image_embed.img_processor` hidden states at "
            "`vision_config.feature_layer`, mean over the used crops' valid patches, before "
            "the image projection",
            vision_tokens=_DECODER_VISION_TOKENS,
            pool_visual=_pool_phi4,
        ),
        *(  # SmolVLM is the Idefics3 architecture under its own class names
            Family(
                name,
                decoder="text_model",
                visual_module="connector",
                visual="input of `connector`: the vision model's last hidden state per crop, "
                "before pixel shuffle and projection",
                vision_tokens=_DECODER_VISION_TOKENS,
                pool_visual=_pool_projector_input,
            )
            for name in ("idefics3", "smolvlm")
        ),
    )
}

# Base-model class name -> family. The base model is what `*ForConditionalGeneration.model`
# (or `Phi4MultimodalForCausalLM.model`) holds.
_BASE_CLASSES = {
    "LlavaModel": "llava",
    "Gemma3Model": "gemma3",
    "Qwen2_5_VLModel": "qwen2_5_vl",
    "MllamaModel": "mllama",
    "Phi4MultimodalModel": "phi4_multimodal",
    "Idefics3Model": "idefics3",
    "SmolVLMModel": "smolvlm",
}


def base_model(model: nn.Module) -> tuple[nn.Module, Family]:
    """The model without its LM head, and its family; unsupported classes are refused."""
    for candidate in (model, getattr(model, "model", None)):
        name = type(candidate).__name__
        if candidate is not None and name in _BASE_CLASSES:
            return candidate, FAMILIES[_BASE_CLASSES[name]]
    raise VLMError(
        f"{type(model).__name__} is not a supported vision-language model; supported base "
        f"models: {', '.join(sorted(_BASE_CLASSES))} (or their *ForConditionalGeneration)"
    )


def image_token_id_of(config: Any) -> int:
    """The image placeholder token id a model's config declares."""
    for holder in (config, getattr(config, "vision_config", None)):
        for name in ("image_token_id", "image_token_index"):
            value = getattr(holder, name, None)
            if isinstance(value, int):
                return value
    raise VLMError(
        f"{type(config).__name__} names no image token id; pass image_token_id= (the "
        "processor's `image_token_id`)"
    )


def _path(module: nn.Module, path: str) -> nn.Module:
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


# --------------------------------------------------------------------------- capture


@dataclass
class VLMCapture:
    """Per-layer reductions of the prefill and the visual module's call.

    Capture points `layer.{i}.query_token`, `layer.{i}.vision_tokens` (i = 0..L), `visual`."""

    attention_mask: torch.Tensor  # (B, T)
    image_mask: torch.Tensor  # (B, T) positions the vision_tokens mean runs over
    query_token: list[torch.Tensor | None]  # L+1 x (B, H)
    vision_tokens: list[torch.Tensor | None]  # L+1 x (B, H)
    visual_tap: _Tap = field(default_factory=_Tap)
    calls: dict[str, int] = field(default_factory=dict)  # forward calls seen per hooked module

    def record(self, index: int, hidden: torch.Tensor, *, vision: bool = True) -> None:
        if self.calls.get("base", 0) > 1:
            return  # a decode step after the prefill (in `generate`): not a feature
        if self.query_token[index] is not None:
            raise VLMError(f"decoder layer {index} ran twice in one prefill")
        hidden = hidden.detach().float()  # (B, T, H)
        self.query_token[index] = hidden[:, -1, :].cpu()  # left padding: the last prompt token
        if vision:
            self.vision_tokens[index] = _masked_mean(hidden, self.image_mask)

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H) mean over the masked positions."""
    weights = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu()


@contextmanager
def capture_vlm(
    base: nn.Module, family: Family, attention_mask: torch.Tensor, image_mask: torch.Tensor
) -> Iterator[VLMCapture]:
    """Hooks on the decoder layers, the visual module (and Mllama's cross-attention);
    removed on exit, whatever happens inside."""
    layers = _path(base, family.decoder).layers
    if not isinstance(layers, nn.ModuleList):
        raise VLMError(f"cannot find the decoder layers of {type(base).__name__}")
    size = len(layers) + 1
    capture = VLMCapture(attention_mask, image_mask, [None] * size, [None] * size)

    def embedding_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, H) merged embeddings
        capture.record(0, hidden, vision=not family.cross_attention)

    def layer_hook(index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            capture.record(index, hidden_of(output), vision=not family.cross_attention)

        return hook

    def visual_hook(
        _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        capture.count("visual")
        capture.visual_tap.args.append(tuple(_detach(a) for a in args))
        capture.visual_tap.kwargs.append({k: _detach(v) for k, v in kwargs.items()})
        capture.visual_tap.outputs.append(output)

    def cross_hook(index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            capture.vision_tokens[index] = _masked_mean(hidden_of(output).float(), image_mask)

        return hook

    hooks = [
        Hook(base, lambda *_: capture.count("base"), pre=True),
        Hook(layers[0], embedding_hook, pre=True, with_kwargs=True),
        *(Hook(layer, layer_hook(i + 1)) for i, layer in enumerate(layers)),
        Hook(_path(base, family.visual_module), visual_hook, with_kwargs=True),
    ]
    if family.cross_attention:
        crosses = [getattr(layer, "cross_attn", None) for layer in layers]
        hooks += [
            Hook(cross, cross_hook(i + 1))
            for i, cross in enumerate(crosses)
            if isinstance(cross, nn.Module)
        ]
    with hooked(hooks):
        yield capture


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value


# --------------------------------------------------------------------------- features


def prefill_inputs(model: nn.Module, inputs: Inputs) -> dict[str, Any]:
    """The inputs of the feature forward: the batch plus the position ids `generate` would
    give its prefill (left padding: cumulative sum of the attention mask), unless the batch
    brings its own. Qwen2.5-VL derives its multimodal rope positions itself, from
    `mm_token_type_ids` (1 on image tokens), which is filled in when the batch lacks it."""
    base, family = base_model(model)
    batch = dict(inputs)
    if family.rope_1d and batch.get("position_ids") is None:
        mask = torch.as_tensor(batch["attention_mask"]).long()
        batch["position_ids"] = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if not family.rope_1d and batch.get("mm_token_type_ids") is None:
        token_id = image_token_id_of(getattr(model, "config", base.config))
        batch["mm_token_type_ids"] = (torch.as_tensor(batch["input_ids"]) == token_id).int()
    return batch


@torch.inference_mode()
def vlm_features(
    model: nn.Module, inputs: Inputs, image_token_id: int | None = None
) -> VLMFeatures:
    """All three feature families of one batch from a single prefill forward.

    `inputs` is what the model's processor returns (left padding), e.g. `input_ids`,
    `attention_mask`, `pixel_values` and the family's extras (`image_grid_thw`,
    `aspect_ratio_ids` / `aspect_ratio_mask` / `cross_attention_mask`, `image_sizes`, ...).
    The base model runs once (no LM head, no cache); hooks read everything on the way.
    """
    with prefill_reader(model, inputs, image_token_id) as (batch, read):
        base_model(model)[0](**batch, use_cache=False)
    return read()


@contextmanager
def prefill_reader(
    model: nn.Module, inputs: Inputs, image_token_id: int | None = None
) -> Iterator[tuple[dict[str, Any], Callable[[], VLMFeatures]]]:
    """Hooks that read the three families from the model's first forward on `inputs` (its
    prefill; in `generate`, the decode steps after it are ignored). Yields the prepared
    batch (the inputs with the prefill's position ids, on the model's device) and a function
    that returns the features once that forward ran."""
    base, family = base_model(model)
    config = getattr(model, "config", base.config)
    token_id = image_token_id_of(config) if image_token_id is None else image_token_id
    batch = _on_model(base, prefill_inputs(model, inputs))
    image_mask, per_example = _image_positions(batch, family, token_id)
    with capture_vlm(base, family, batch["attention_mask"], image_mask) as capture:
        yield batch, lambda: _read(capture, family, batch, per_example, config, token_id)


def _read(
    capture: VLMCapture,
    family: Family,
    batch: dict[str, Any],
    per_example: torch.Tensor,
    config: Any,
    token_id: int,
) -> VLMFeatures:
    missing_layers = [i for i, t in enumerate(capture.query_token) if t is None]
    if missing_layers:
        raise VLMError(f"decoder layers {missing_layers} did not run in the prefill")
    visual = family.pool_visual(capture.visual_tap, batch, per_example, config)

    query = torch.stack(capture.query_token, 1)  # type: ignore[arg-type]  # (B, L+1, H)
    defined = [i for i, t in enumerate(capture.vision_tokens) if t is not None]
    if family.cross_attention:
        _, _, projected = capture.visual_tap.one()  # (B, images, tiles, patches, H)
        capture.vision_tokens[0] = _masked_tile_mean(projected, batch["aspect_ratio_mask"])
        defined = [0, *defined]
    zeros = torch.zeros_like(query[:, 0])
    vision = torch.stack([zeros if t is None else t for t in capture.vision_tokens], 1)
    notes = {
        "family": family.name,
        "image_token_id": token_id,
        "num_layers": query.shape[1] - 1,
        "visual": family.visual,
        "vision_tokens": family.vision_tokens,
        "vision_tokens_layers": defined,
        "query_token": "decoder hidden state of the last prompt token (left padding), per layer",
        "layer_0": "input of the first decoder layer: embeddings with the image features merged",
        "forward_calls": dict(capture.calls),  # {"base": 1, "visual": 1}
    }
    return VLMFeatures(visual=visual, vision_tokens=vision, query_token=query, notes=notes)


def _on_model(base: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch on the model's device; floating tensors (pixels) in its dtype."""
    weight = next(base.parameters())
    return {
        k: v.to(weight.device, weight.dtype if v.is_floating_point() else v.dtype)
        if isinstance(v, torch.Tensor)
        else v
        for k, v in batch.items()
    }


def _image_positions(
    batch: Mapping[str, Any], family: Family, token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks the batch; returns the (B, T) positions `vision_tokens` averages over and the
    (B,) number of image tokens of each example."""
    if "pixel_values_videos" in batch:
        raise VLMError("video inputs are not supported; pass images only")
    input_ids, attention_mask = batch.get("input_ids"), batch.get("attention_mask")
    if input_ids is None or attention_mask is None:
        raise VLMError("inputs need input_ids and attention_mask (the processor's output)")
    if not bool(attention_mask[:, -1].all()):
        raise VLMError(
            "the last position is padding in some rows: use left padding "
            "(processor.tokenizer.padding_side = 'left')"
        )
    image_mask = (input_ids == token_id) & attention_mask.bool()  # (B, T)
    per_example = image_mask.sum(1).cpu()  # (B,)
    if not bool((per_example > 0).all()):
        missing = (per_example == 0).nonzero().flatten().tolist()
        raise VLMError(
            f"examples {missing} hold no image token (id {token_id}); every prompt needs its "
            "image placeholder (use the processor's chat template or image token)"
        )
    if family.cross_attention:
        image_mask = _cross_attending(batch, attention_mask)
    return image_mask, per_example


def _cross_attending(batch: Mapping[str, Any], attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) Mllama prompt positions whose cross-attention sees at least one image tile."""
    cross = batch.get("cross_attention_mask")
    if cross is None:
        raise VLMError("Mllama inputs need cross_attention_mask (the processor's output)")
    return (cross.flatten(2).sum(-1) > 0) & attention_mask.bool()


# --------------------------------------------------------------------------- real models


def extract_vlm_features(
    model: nn.Module,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    format_prompt: Callable[[str], str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> VLMFeatures:
    """Features of (image, prompt) pairs for a real VLM (loaded by local path or cached hub
    id), `batch_size` examples per forward; the processor builds the inputs, left-padded."""
    if len(images) != len(prompts):
        raise VLMError(f"{len(images)} images for {len(prompts)} prompts; give one per prompt")
    if batch_size < 1:
        raise VLMError(f"batch_size={batch_size}; use 1 or more")
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    token_id = getattr(processor, "image_token_id", None)
    render = format_prompt or (lambda p: chat_prompt(processor, p))
    parts: list[VLMFeatures] = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        inputs = processor(
            images=[[image] for image in images[chunk]],
            text=[render(p) for p in prompts[chunk]],
            return_tensors="pt",
            padding=True,
        )
        parts.append(vlm_features(model, inputs, token_id if isinstance(token_id, int) else None))
        if on_progress:
            on_progress(min(start + batch_size, len(prompts)), len(prompts))
    return concat_features(parts)
