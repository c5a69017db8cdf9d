"""Tiny random-init vision-language models of each supported family, built locally.

No processor can be downloaded here, so each builder also writes the inputs a processor
would: left-padded `input_ids` with the right number of image tokens per example, pixel
tensors of the right shape, and the family's extra tensors. Two examples per batch, with
different prompt lengths (so one is left-padded) and, where the family allows it, a
different number of image crops/tiles per example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

VOCAB = 64
PAD = 0
IMAGE = 60  # the image (placeholder) token id of every tiny model
HIDDEN = 32  # text hidden size
VISION_HIDDEN = 24  # vision encoder hidden size (differs from HIDDEN on purpose)
TEXT_LAYERS = 2
# Sizes every tiny decoder and vision encoder shares (layer counts and vocab vary).
TEXT_SIZES = {
    "hidden_size": HIDDEN,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "pad_token_id": PAD,
}
VISION_SIZES = {
    "hidden_size": VISION_HIDDEN,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 16,
    "patch_size": 4,
}


@dataclass
class TinyVLM:
    family: str
    model: PreTrainedModel
    inputs: dict[str, torch.Tensor]
    image_token_id: int
    num_layers: int  # decoder layers L (features have L+1 rows)
    vision_hidden: int  # H_v of the `visual` feature


def left_padded(
    segments: Sequence[Sequence[tuple[str, int]]], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` from per-example segments ("text" | "image", length),
    left-padded to the longest example. Text tokens are random ids in [3, 50)."""
    generator = torch.Generator().manual_seed(seed)
    rows: list[list[int]] = []
    for example in segments:
        row: list[int] = []
        for kind, length in example:
            if kind == "image":
                row += [IMAGE] * length
            else:
                row += torch.randint(3, 50, (length,), generator=generator).tolist()
        rows.append(row)
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[PAD] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return input_ids, attention_mask


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_llava(vocab: int = VOCAB, image_token: int = IMAGE) -> TinyVLM:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    vision = CLIPVisionConfig(**VISION_SIZES, projection_dim=16)
    text = LlamaConfig(vocab_size=vocab, num_hidden_layers=TEXT_LAYERS, **TEXT_SIZES)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",  # the CLS token is dropped: 16 image tokens
    )
    model = LlavaForConditionalGeneration(config).eval()
    input_ids, attention_mask = left_padded(
        [[("text", 3), ("image", 16), ("text", 5)], [("text", 1), ("image", 16), ("text", 2)]]
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": _pixels(2, 3, 16, 16),
    }
    return TinyVLM("llava", model, inputs, image_token, TEXT_LAYERS, VISION_HIDDEN)


def tiny_gemma3() -> TinyVLM:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(0)
    vision = SiglipVisionConfig(**VISION_SIZES)  # 4x4 patches, pooled to 2x2 = 4 image tokens
    text = Gemma3TextConfig(
        vocab_size=VOCAB,
        num_hidden_layers=TEXT_LAYERS,
        **TEXT_SIZES,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    config = Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=4,
        image_token_index=IMAGE,
        boi_token_index=61,
        eoi_token_index=62,
    )
    model = Gemma3ForConditionalGeneration(config).eval()
    input_ids, attention_mask = left_padded(
        [[("text", 4), ("image", 4), ("text", 6)], [("text", 2), ("image", 4), ("text", 3)]]
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": (input_ids == IMAGE).long(),  # the processor's: 1 on image tokens
        "pixel_values": _pixels(2, 3, 16, 16),
    }
    return TinyVLM("gemma3", model, inputs, IMAGE, TEXT_LAYERS, VISION_HIDDEN)


def tiny_qwen2_5_vl() -> TinyVLM:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 48,
            "num_heads": 3,  # vision rotary needs head_dim % 4 == 0: 24 / 3 = 8
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 16,
            "out_hidden_size": HIDDEN,
            "fullatt_block_indexes": [1],
        },
        text_config={
            "vocab_size": VOCAB,
            "num_hidden_layers": TEXT_LAYERS,
            **TEXT_SIZES,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]},
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        image_token_id=IMAGE,
        video_token_id=59,
        vision_start_token_id=61,
        vision_end_token_id=62,
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # image 0: a 4x4 patch grid -> 4 tokens; image 1: 4x8 patches -> 8 tokens
    grid_thw = torch.tensor([[1, 4, 4], [1, 4, 8]])
    patches = int(grid_thw.prod(-1).sum())
    input_ids, attention_mask = left_padded(
        [[("text", 3), ("image", 4), ("text", 5)], [("text", 2), ("image", 8), ("text", 4)]]
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": (input_ids == IMAGE).int(),
        "pixel_values": _pixels(patches, 3 * 2 * 4 * 4),
        "image_grid_thw": grid_thw,
    }
    return TinyVLM("qwen2_5_vl", model, inputs, IMAGE, TEXT_LAYERS, VISION_HIDDEN)


def _idefics3_like(family: str, vocab: int = VOCAB, image_token: int = IMAGE) -> TinyVLM:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )

    torch.manual_seed(0)
    vision = VISION_SIZES  # 16 patches per crop, pixel-shuffled by 2: 4 tokens per crop
    text = {
        "model_type": "llama",
        "vocab_size": vocab,
        "num_hidden_layers": TEXT_LAYERS,
        **TEXT_SIZES,
    }
    config_cls, model_cls = (
        (Idefics3Config, Idefics3ForConditionalGeneration)
        if family == "idefics3"
        else (SmolVLMConfig, SmolVLMForConditionalGeneration)
    )
    config = config_cls(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token,
        scale_factor=2,
        pad_token_id=PAD,
    )
    model = model_cls(config).eval()
    # example 0: 3 crops (12 image tokens); example 1: 1 crop + 2 all-zero padding crops
    input_ids, attention_mask = left_padded(
        [[("text", 2), ("image", 12), ("text", 4)], [("text", 3), ("image", 4), ("text", 3)]]
    )
    pixel_values = _pixels(2, 3, 3, 16, 16)
    pixel_values[1, 1:] = 0.0
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "pixel_attention_mask": torch.ones(2, 3, 16, 16, dtype=torch.long),
    }
    return TinyVLM(family, model, inputs, image_token, TEXT_LAYERS, VISION_HIDDEN)


def tiny_idefics3() -> TinyVLM:
    return _idefics3_like("idefics3")


def tiny_smolvlm() -> TinyVLM:
    return _idefics3_like("smolvlm")


MLLAMA_LAYERS = 3  # self, cross, self
MLLAMA_CROSS_LAYERS = (1,)


def tiny_mllama() -> TinyVLM:
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    torch.manual_seed(0)
    intermediate = [0, 1]
    config = MllamaConfig(
        vision_config={
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "attention_heads": 4,
            "image_size": 16,
            "patch_size": 4,
            "max_num_tiles": 2,
            "intermediate_layers_indices": intermediate,
            "vision_output_dim": VISION_HIDDEN * (1 + len(intermediate)),
            "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
        },
        text_config={
            "vocab_size": VOCAB,
            "num_hidden_layers": MLLAMA_LAYERS,
            **TEXT_SIZES,
            "cross_attention_layers": list(MLLAMA_CROSS_LAYERS),
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        image_token_index=IMAGE,
    )
    model = MllamaForConditionalGeneration(config).eval()
    # One <|image|> token per prompt; text from it onwards attends to the image's tiles.
    input_ids, attention_mask = left_padded(
        [[("text", 2), ("image", 1), ("text", 6)], [("text", 1), ("image", 1), ("text", 3)]]
    )
    tiles = torch.tensor([1, 2])  # example 0: one tile (aspect 1x1); example 1: two (1x2)
    aspect_ratio_mask = torch.zeros(2, 1, 2, dtype=torch.long)
    cross_attention_mask = torch.zeros(2, input_ids.shape[1], 1, 2, dtype=torch.long)
    for b, n_tiles in enumerate(tiles.tolist()):
        aspect_ratio_mask[b, 0, :n_tiles] = 1
        start = int((input_ids[b] == IMAGE).nonzero()[0])
        cross_attention_mask[b, start:, 0, :n_tiles] = 1
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": _pixels(2, 1, 2, 3, 16, 16),
        "aspect_ratio_ids": torch.tensor([[1], [2]]),
        "aspect_ratio_mask": aspect_ratio_mask,
        "cross_attention_mask": cross_attention_mask,
    }
    return TinyVLM(
        "mllama", model, inputs, IMAGE, MLLAMA_LAYERS, VISION_HIDDEN * (1 + len(intermediate))
    )


def phi4_image_tokens(height: int, width: int, crop: int, base: int) -> int:
    """Image tokens Phi-4-multimodal writes for an image of (height, width) pixels:
    sub-crops with a newline column, one separator, the global crop with its newline column."""
    rows, cols = (height // crop) * base, (width // crop) * base
    return rows * (cols + 1) + 1 + base * (base + 1)


def tiny_phi4_multimodal() -> TinyVLM:
    from transformers import Phi4MultimodalConfig, Phi4MultimodalForCausalLM

    torch.manual_seed(0)
    crop, patch = 16, 4  # 4x4 patches per crop, average-pooled to 2x2 tokens
    config = Phi4MultimodalConfig(
        vocab_size=VOCAB,
        num_hidden_layers=TEXT_LAYERS,
        **TEXT_SIZES,
        bos_token_id=1,
        eos_token_id=2,
        vision_config={
            **VISION_SIZES,
            "image_size": crop,
            "crop_size": crop,
            "patch_size": patch,
            "image_token_id": IMAGE,
        },
        audio_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_blocks": 1,
            "num_attention_heads": 2,
            "ext_pw_out_channel": 16,
            "depthwise_separable_out_channel": 16,
            "nemo_conv_channels": 16,
            "input_size": 16,
            "audio_token_id": 59,
        },
    )
    model = Phi4MultimodalForCausalLM(config).eval()
    sizes = torch.tensor([[16, 32], [16, 16]])  # example 0: 2 sub-crops; example 1: 1
    counts = [phi4_image_tokens(int(h), int(w), crop, 2) for h, w in sizes]
    input_ids, attention_mask = left_padded(
        [[("text", 3), ("image", counts[0]), ("text", 4)], [("text", 2), ("image", counts[1])]]
    )
    # Crops: global + sub-crops, then all-masked padding crops. Each example keeps at least
    # one padding crop, so each alone still has one: in transformers 5.19 the Phi-4 SigLIP
    # attention has is_causal=True, and under SDPA it runs causally whenever the image batch
    # has no padded patch at all, which would make a batch of one differ from the batch.
    image_attention_mask = torch.ones(2, 4, crop // patch, crop // patch, dtype=torch.long)
    image_attention_mask[0, 3:] = 0
    image_attention_mask[1, 2:] = 0
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "image_pixel_values": _pixels(2, 4, 3, crop, crop),
        "image_sizes": sizes,
        "image_attention_mask": image_attention_mask,
    }
    return TinyVLM("phi4_multimodal", model, inputs, IMAGE, TEXT_LAYERS, VISION_HIDDEN)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_llava_with_processor() -> tuple[TinyVLM, object]:
    """A tiny LLaVA and a real `LlavaProcessor` built from local parts (the tiny BPE
    tokenizer plus an `<image>` token, a CLIP image processor at 16x16 pixels)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from tests.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
        ),
        tokenizer=tokenizer,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLS, dropped by the 'default' strategy
        image_token="<image>",
        chat_template=CHAT_TEMPLATE,
    )
    return tiny_llava(vocab=len(tokenizer), image_token=image_token), processor


def tiny_idefics3_with_processor() -> tuple[TinyVLM, object]:
    """A tiny Idefics3 and a real `Idefics3Processor` from local parts: images resized to a
    32-pixel longest edge and split into 16-pixel crops plus a global one (4 tokens each)."""
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    from tests.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    grid_tags = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<global-img>", *grid_tags]})
    processor = Idefics3Processor(  # adds <image>, <fake_token_around_image>, ...
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 32}, max_image_size={"longest_edge": 16}, do_image_splitting=True
        ),
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=CHAT_TEMPLATE,
    )
    tiny = _idefics3_like("idefics3", vocab=len(tokenizer), image_token=processor.image_token_id)
    return tiny, processor


PROCESSOR_BUILDERS: dict[str, Callable[[], tuple[TinyVLM, object]]] = {
    "llava": tiny_llava_with_processor,
    "idefics3": tiny_idefics3_with_processor,
}


BUILDERS: dict[str, Callable[[], TinyVLM]] = {
    "llava": tiny_llava,
    "gemma3": tiny_gemma3,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "mllama": tiny_mllama,
    "phi4_multimodal": tiny_phi4_multimodal,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
}


# (B, T, ...) tensors aligned with the token sequence
SEQUENCE_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
    "cross_attention_mask",
)


def example_inputs(tiny: TinyVLM, b: int) -> dict[str, torch.Tensor]:
    """Example `b` of a tiny batch on its own, without padding: what a batch of one holds."""
    keep = tiny.inputs["attention_mask"][b].bool()
    single: dict[str, torch.Tensor] = {}
    for key, value in tiny.inputs.items():
        if key in SEQUENCE_KEYS:
            single[key] = value[b : b + 1, keep]
        elif tiny.family == "qwen2_5_vl" and key == "pixel_values":
            sizes = tiny.inputs["image_grid_thw"].prod(-1).tolist()
            single[key] = torch.split(value, sizes)[b]
        else:
            single[key] = value[b : b + 1]
    return single
