"""VLM features on a tiny random-init model of every supported family (built locally).

Each family is checked against references computed another way: `output_hidden_states` of
a separate forward for the decoder features, the vision encoder run on its own for `visual`,
and the same examples run one at a time (no padding) for batch invariance.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch
from torch import nn

from engines.hooks import Hook, hooked
from probes.vlm import (
    FAMILIES,
    VLMError,
    concat_features,
    extract_vlm_features,
    prefill_inputs,
    vlm_features,
)
from tests.tiny_vlms import (
    BUILDERS,
    MLLAMA_CROSS_LAYERS,
    PROCESSOR_BUILDERS,
    TinyVLM,
    example_inputs,
    tiny_llava,
)

pytestmark = pytest.mark.filterwarnings("ignore:`hidden_state` is deprecated:FutureWarning")
ATOL = 1e-4
_CACHE: dict[str, TinyVLM] = {}


def built(family: str) -> TinyVLM:
    """One tiny model per family for the whole module (each takes about a second)."""
    if family not in _CACHE:
        _CACHE[family] = BUILDERS[family]()
    return _CACHE[family]


@pytest.fixture(params=sorted(BUILDERS))
def tiny(request: pytest.FixtureRequest) -> TinyVLM:
    return built(request.param)


@pytest.fixture(params=sorted(set(BUILDERS) - {"mllama"}))
def decoder_tiny(request: pytest.FixtureRequest) -> TinyVLM:
    """Families whose image tokens are decoder positions (all but Mllama)."""
    return built(request.param)


def vision_tower(tiny: TinyVLM) -> nn.Module:
    base = tiny.model.model
    return {
        "llava": lambda: base.vision_tower,
        "gemma3": lambda: base.vision_tower,
        "qwen2_5_vl": lambda: base.visual,
        "mllama": lambda: base.vision_model,
        "phi4_multimodal": lambda: base.embed_tokens_extend.image_embed.img_processor,
        "idefics3": lambda: base.vision_model,
        "smolvlm": lambda: base.vision_model,
    }[tiny.family]()


@torch.no_grad()
def reference_hidden_states(tiny: TinyVLM) -> torch.Tensor:
    """(B, L+1, T, H) from `output_hidden_states` of a separate forward."""
    batch = prefill_inputs(tiny.model, tiny.inputs)
    if tiny.family == "phi4_multimodal":
        # transformers 5.19: output_hidden_states=True on the Phi-4 model also reaches its
        # nested SigLIP encoder's capture, whose hidden_states then has extra entries, so the
        # image features come from the wrong layer. Merge the image features first, without
        # it, then ask the decoder alone for its hidden states.
        base = tiny.model.model
        embeds = base.embed_tokens_extend(
            batch["input_ids"],
            base.embed_tokens(batch["input_ids"]),
            image_pixel_values=batch["image_pixel_values"],
            image_sizes=batch["image_sizes"],
            image_attention_mask=batch["image_attention_mask"],
        )
        out = base(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            output_hidden_states=True,
            use_cache=False,
        )
    else:
        out = tiny.model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return torch.stack(out.hidden_states, 1)


@torch.no_grad()
def reference_visual(tiny: TinyVLM) -> torch.Tensor:
    """(B, H_v) from the vision encoder run on its own, pooled by hand."""
    x, tower = tiny.inputs, vision_tower(tiny)
    if tiny.family == "llava":  # vision_feature_layer=-2, CLS dropped
        return tower(x["pixel_values"], output_hidden_states=True).hidden_states[-2][:, 1:].mean(1)
    if tiny.family == "gemma3":
        return tower(pixel_values=x["pixel_values"]).last_hidden_state.mean(1)
    if tiny.family == "qwen2_5_vl":  # each image alone: its ViT output before the merger
        grid = x["image_grid_thw"]
        images = torch.split(x["pixel_values"], grid.prod(-1).tolist())
        return torch.stack(
            [
                tower(pixels, grid_thw=grid[k : k + 1]).last_hidden_state.mean(0)
                for k, pixels in enumerate(images)
            ]
        )
    if tiny.family in ("idefics3", "smolvlm"):  # real (non-zero) crops of each example
        rows = []
        for crops in x["pixel_values"]:
            real = crops[crops.flatten(1).abs().sum(1) > 0]
            mask = torch.ones(len(real), 4, 4, dtype=torch.bool)
            rows.append(
                tower(pixel_values=real, patch_attention_mask=mask).last_hidden_state.mean((0, 1))
            )
        return torch.stack(rows)
    if tiny.family == "mllama":  # (B, 1, tiles, patches, D) over each example's real tiles
        out = tower(
            pixel_values=x["pixel_values"],
            aspect_ratio_ids=x["aspect_ratio_ids"],
            aspect_ratio_mask=x["aspect_ratio_mask"],
        ).last_hidden_state
        tiles = x["aspect_ratio_mask"].sum((1, 2)).tolist()
        return torch.stack([out[b, 0, :n].mean((0, 1)) for b, n in enumerate(tiles)])
    # phi4_multimodal: SigLIP states at feature_layer=-2 over the crops the model uses
    crops = x["image_pixel_values"].shape[1]
    states = tower(
        x["image_pixel_values"].flatten(0, 1),
        patch_attention_mask=x["image_attention_mask"].flatten(0, 1).bool(),
        output_hidden_states=True,
    ).hidden_states[-2]
    states = states.reshape(len(x["image_sizes"]), crops, *states.shape[1:])
    used = [1 + (h // 16) * (w // 16) for h, w in x["image_sizes"].tolist()]
    return torch.stack([states[b, :n].mean((0, 1)) for b, n in enumerate(used)])


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_family_is_built() -> None:
    assert set(BUILDERS) == set(FAMILIES)


def test_shapes_and_notes(tiny: TinyVLM) -> None:
    features = vlm_features(tiny.model, tiny.inputs)
    batch, layers = tiny.inputs["input_ids"].shape[0], tiny.num_layers + 1
    assert features.visual.shape == (batch, tiny.vision_hidden)
    assert features.vision_tokens.shape == (batch, layers, 32)
    assert features.query_token.shape == (batch, layers, 32)
    assert features.notes["family"] == tiny.family
    assert features.notes["image_token_id"] == tiny.image_token_id
    assert features.notes["visual"] and features.notes["vision_tokens"]
    for tensor in (features.visual, features.vision_tokens, features.query_token):
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    points = features.capture_points()
    assert {"visual", f"layer.{layers - 1}.query_token", "layer.0.vision_tokens"} <= set(points)


def test_one_forward_pass_yields_all_three(tiny: TinyVLM) -> None:
    base = tiny.model.model
    watched = {
        "outer": tiny.model,
        "base": base,
        "vision": vision_tower(tiny),
        "lm_head": tiny.model.lm_head,
        **{f"layer.{i}": layer for i, layer in enumerate(decoder_layers_of(tiny))},
    }
    calls = dict.fromkeys(watched, 0)
    handles = [
        module.register_forward_pre_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
        for name, module in watched.items()
    ]
    try:
        features = vlm_features(tiny.model, tiny.inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert calls.pop("outer") == 0 and calls.pop("lm_head") == 0  # no vocabulary logits
    assert set(calls.values()) == {1}, calls  # base, vision tower, every decoder layer: once
    assert features.notes["forward_calls"] == {"base": 1, "visual": 1}


def decoder_layers_of(tiny: TinyVLM) -> nn.ModuleList:
    base = tiny.model.model
    decoder = FAMILIES[tiny.family].decoder
    return (getattr(base, decoder) if decoder else base).layers  # type: ignore[no-any-return]


def test_query_token_equals_output_hidden_states(tiny: TinyVLM) -> None:
    features = vlm_features(tiny.model, tiny.inputs)
    hidden = reference_hidden_states(tiny)  # (B, L+1, T, H)
    below = tiny.num_layers  # HF puts the final norm into the last entry: compare layers < L
    torch.testing.assert_close(
        features.query_token[:, :below], hidden[:, :below, -1], atol=ATOL, rtol=0
    )


def test_vision_tokens_are_the_image_token_positions(decoder_tiny: TinyVLM) -> None:
    tiny = decoder_tiny
    input_ids = tiny.inputs["input_ids"]
    positions = input_ids == tiny.image_token_id  # (B, T)
    first = positions.float().argmax(1)
    assert first[0] != first[1]  # the image sits at a different offset in each row
    hidden = reference_hidden_states(tiny)  # (B, L+1, T, H)
    weights = positions[:, None, :, None].float()
    expected = (hidden * weights).sum(2) / weights.sum(2)  # (B, L+1, H)
    features = vlm_features(tiny.model, tiny.inputs)
    below = tiny.num_layers
    torch.testing.assert_close(
        features.vision_tokens[:, :below], expected[:, :below], atol=ATOL, rtol=0
    )
    assert features.notes["vision_tokens_layers"] == list(range(tiny.num_layers + 1))
    # any other set of positions gives another feature: the positions are really these
    shifted = (hidden * positions.roll(1, dims=1)[:, None, :, None].float()).sum(2)
    assert not torch.allclose(shifted[:, :below] / weights.sum(2)[:, :below], expected[:, :below])


def test_visual_is_the_vision_encoder_output(tiny: TinyVLM) -> None:
    features = vlm_features(tiny.model, tiny.inputs)
    torch.testing.assert_close(features.visual, reference_visual(tiny), atol=ATOL, rtol=0)


def test_batch_equals_examples_one_at_a_time(tiny: TinyVLM) -> None:
    """Left padding and batching change nothing: positions come from the attention mask."""
    batched = vlm_features(tiny.model, tiny.inputs)
    singles = concat_features(
        [vlm_features(tiny.model, example_inputs(tiny, b)) for b in range(len(batched))]
    )
    for kind in ("visual", "vision_tokens", "query_token"):
        torch.testing.assert_close(batched.feature(kind), singles.feature(kind), atol=ATOL, rtol=0)


def test_hooks_are_removed_even_on_error(tiny: TinyVLM) -> None:
    vlm_features(tiny.model, tiny.inputs)  # transformers installs its own hooks lazily, once
    before = hook_count(tiny.model)
    vlm_features(tiny.model, tiny.inputs)
    assert hook_count(tiny.model) == before
    broken = dict(tiny.inputs)
    pixels = next(k for k in ("pixel_values", "image_pixel_values") if k in broken)
    broken[pixels] = broken[pixels][..., :3]  # a malformed image tensor fails mid-forward
    with pytest.raises(Exception):  # noqa: B017 - whatever the family raises
        vlm_features(tiny.model, broken)
    assert hook_count(tiny.model) == before


def test_hooked_removes_what_it_registered_when_registering_fails() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    seen: list[str] = []
    hooks = [
        Hook(net[0], lambda *_: seen.append("pre"), pre=True),
        Hook(net[1], lambda *_: seen.append("post")),
    ]
    with hooked(hooks):
        net(torch.zeros(1, 2))
    assert seen == ["pre", "post"] and hook_count(net) == 0
    not_a_module = cast(nn.Module, object())
    with pytest.raises(AttributeError), hooked([*hooks, Hook(not_a_module, print)]):
        pass
    assert hook_count(net) == 0


def test_mllama_vision_tokens() -> None:
    """Rows: 0 = projected vision states over real tiles; 1 + each cross-attention layer =
    its cross-attention read over the prompt positions that see the image; others zero."""
    tiny = built("mllama")
    base, x = tiny.model.model, tiny.inputs
    reads: dict[int, torch.Tensor] = {}
    handles = [
        base.language_model.layers[i].cross_attn.register_forward_hook(
            lambda _m, _a, out, i=i: reads.__setitem__(i, out[0])
        )
        for i in MLLAMA_CROSS_LAYERS
    ]
    try:
        with torch.no_grad():
            tiny.model(**prefill_inputs(tiny.model, x), logits_to_keep=1, use_cache=False)
            projected = base.multi_modal_projector(
                base.vision_model(
                    pixel_values=x["pixel_values"],
                    aspect_ratio_ids=x["aspect_ratio_ids"],
                    aspect_ratio_mask=x["aspect_ratio_mask"],
                ).last_hidden_state
            )  # (B, 1, tiles, patches, H)
    finally:
        for handle in handles:
            handle.remove()
    features = vlm_features(tiny.model, x)
    tiles = x["aspect_ratio_mask"].sum((1, 2)).tolist()
    row0 = torch.stack([projected[b, 0, :n].mean((0, 1)) for b, n in enumerate(tiles)])
    torch.testing.assert_close(features.vision_tokens[:, 0], row0, atol=ATOL, rtol=0)
    sees = (x["cross_attention_mask"].flatten(2).sum(-1) > 0) & x["attention_mask"].bool()
    assert (sees.sum(1) < x["attention_mask"].sum(1)).all()  # text before <|image|> is excluded
    for i in MLLAMA_CROSS_LAYERS:
        expected = (reads[i] * sees[..., None]).sum(1) / sees.sum(1, keepdim=True)
        torch.testing.assert_close(features.vision_tokens[:, i + 1], expected, atol=ATOL, rtol=0)
    defined = [0, *(i + 1 for i in MLLAMA_CROSS_LAYERS)]
    assert features.notes["vision_tokens_layers"] == defined
    others = [i for i in range(tiny.num_layers + 1) if i not in defined]
    assert others and (features.vision_tokens[:, others] == 0).all()
    assert set(features.capture_points()) >= {f"layer.{i}.vision_tokens" for i in defined}
    assert not {f"layer.{i}.vision_tokens" for i in others} & set(features.capture_points())


def test_refuses_right_padding() -> None:
    tiny = tiny_llava()
    right = dict(tiny.inputs)
    mask = right["attention_mask"]
    shift = int((mask[1] == 0).sum())
    right["input_ids"] = right["input_ids"].clone()
    right["input_ids"][1] = right["input_ids"][1].roll(-shift)
    right["attention_mask"] = torch.stack([mask[0], mask[1].roll(-shift)])
    with pytest.raises(VLMError, match="left padding"):
        vlm_features(tiny.model, right)


def test_refuses_prompts_without_an_image_token() -> None:
    tiny = tiny_llava()
    with pytest.raises(VLMError, match="image token"):
        vlm_features(tiny.model, tiny.inputs, image_token_id=7)


def test_refuses_unsupported_models() -> None:
    from tests.tiny_models import tiny_llama, tiny_tokenizer

    model = tiny_llama(tiny_tokenizer())
    with pytest.raises(VLMError, match="not a supported vision-language model"):
        vlm_features(model, {"input_ids": torch.ones(1, 3, dtype=torch.long)})


@pytest.mark.parametrize("family", sorted(PROCESSOR_BUILDERS))
def test_extract_with_a_real_processor(family: str) -> None:
    """The processor builds the inputs (chat template, image tokens, crops), left-padded;
    batch size changes nothing."""
    from tasks.shapes import build_shapes_task

    tiny, processor = PROCESSOR_BUILDERS[family]()
    items = build_shapes_task(n_images=2, questions_per_image=2, seed=1, image_size=48).items
    images, prompts = [i.image for i in items], [i.prompt for i in items]
    images[2] = images[2].crop((0, 0, 48, 16))  # a wide image: fewer crops than the others
    prompts[1] = "Hi?"  # a shorter prompt: its row is left-padded in a batch
    seen: list[int] = []
    by_two = extract_vlm_features(
        tiny.model,
        processor,
        images,
        prompts,
        batch_size=2,
        on_progress=lambda done, _total: seen.append(done),
    )
    one_batch = extract_vlm_features(tiny.model, processor, images, prompts, batch_size=4)
    assert processor.tokenizer.padding_side == "left"  # type: ignore[attr-defined]
    assert seen == [2, 4]
    assert by_two.query_token.shape == (4, tiny.num_layers + 1, 32)
    assert by_two.visual.shape == (4, tiny.vision_hidden)
    assert by_two.notes["image_token_id"] == tiny.image_token_id
    for kind in ("visual", "vision_tokens", "query_token"):
        torch.testing.assert_close(by_two.feature(kind), one_batch.feature(kind), atol=ATOL, rtol=0)
    # the two questions about one image share its visual feature; other images differ
    torch.testing.assert_close(by_two.visual[0], by_two.visual[1])
    assert not torch.allclose(by_two.visual[0], by_two.visual[2])
    assert not torch.allclose(by_two.visual[2], by_two.visual[3])
    with pytest.raises(VLMError, match="one per prompt"):
        extract_vlm_features(tiny.model, processor, images[:1], prompts)


def test_qwen_positions_without_mm_token_type_ids() -> None:
    """Without `mm_token_type_ids` Qwen2.5-VL would fall back to 0..T-1 positions (wrong
    under left padding); they are derived from the image token id instead."""
    tiny = built("qwen2_5_vl")
    bare = {k: v for k, v in tiny.inputs.items() if k != "mm_token_type_ids"}
    torch.testing.assert_close(
        vlm_features(tiny.model, bare).query_token,
        vlm_features(tiny.model, tiny.inputs).query_token,
        atol=ATOL,
        rtol=0,
    )
