"""Tiny random-init models built locally (no download): shapes and plumbing only."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "What is 12 + 35? 12 + 35 = 47.",
    "Is there a red circle in the image? Yes. No.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,?!=+-*",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    layers: int = 2,
    *,
    shared_offset: float = 5.0,
    eos_offset: float = 8.0,
    hidden_size: int = 16,
    heads: int = 4,
    max_positions: int = 256,
) -> LlamaForCausalLM:
    """The offsets set dimension 0 of every embedding row and of EOS's (see below). With
    seed 1 and offsets 1 and 3 instead, greedy answers differ between prompts and most run
    to the token limit. Head size is hidden_size / heads (vLLM's CPU attention wants 32 or
    more); key-value heads are half the heads."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.3,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # an offset in dimension 0 of every (tied) embedding row and a
        embeddings = model.get_input_embeddings().weight  # larger one for EOS: by default
        embeddings[:, 0] = shared_offset  # greedy answers finish at once and about half of
        embeddings[tokenizer.eos_token_id, 0] = eos_offset  # the samples at T=1 in 6 tokens
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def tiny_engine(  # type: ignore[no-untyped-def]
    seed: int = 0, layers: int = 2, batch_size: int = 8, **shape: float
):
    from engines.hf import HFEngine

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed, layers, **shape)  # type: ignore[arg-type]
    return HFEngine(model, tokenizer, name="tiny-llama", batch_size=batch_size)
