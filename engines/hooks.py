"""Forward hooks that read a generation's own prefill: every layer's hidden states.

Every hook is registered through `hooked`, a context manager that removes it in `finally`
(the VLM features in `probes.vlm` use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from engines.base import PromptStates


@dataclass(frozen=True)
class Hook:
    """One hook to register: after `module`'s forward (`fn(module, args, output)`) or,
    with `pre`, before it (`fn(module, args)`); `with_kwargs` adds the keyword arguments
    (`fn(module, args, kwargs, output)` / `fn(module, args, kwargs)`)."""

    module: nn.Module
    fn: Callable[..., Any]
    pre: bool = False
    with_kwargs: bool = False


@contextmanager
def hooked(hooks: Iterable[Hook]) -> Iterator[None]:
    """Every hook registered, in order, for the `with` block; all of them removed on exit,
    whatever happens inside (or while registering)."""
    handles: list[RemovableHandle] = []
    try:
        for hook in hooks:
            if hook.pre:
                handle = hook.module.register_forward_pre_hook(
                    hook.fn, with_kwargs=hook.with_kwargs
                )
            else:
                handle = hook.module.register_forward_hook(hook.fn, with_kwargs=hook.with_kwargs)
            handles.append(handle)
        yield
    finally:
        for handle in handles:
            handle.remove()


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder's block list of a causal LM (Llama, Qwen, Gemma, GPT-2 style)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


def hidden_of(output: object) -> torch.Tensor:
    """A layer's hidden states (B, T, H) from its output (decoder layers may return a tuple)."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


@dataclass
class PrefillCapture:
    """States of the first forward pass under the hooks (the prefill), every layer.

    Capture points: `layer.{i}.query_token` and `layer.{i}.prompt_mean`, i = 0 (embeddings)
    .. L (decoder layer outputs).
    """

    attention_mask: torch.Tensor  # (B, T) of the prefill batch, 1 = real token
    query_token: list[torch.Tensor | None] = field(default_factory=list)  # L+1 x (B, H)
    prompt_mean: list[torch.Tensor | None] = field(default_factory=list)  # L+1 x (B, H)

    def record(self, index: int, hidden: torch.Tensor) -> None:
        if self.query_token[index] is not None or hidden.shape[1] != self.attention_mask.shape[1]:
            return  # a decoding step, or the prefill was already recorded
        hidden = hidden.detach().float()  # (B, T, H)
        mask = self.attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        self.query_token[index] = hidden[:, -1, :].cpu()  # left padding: last = last prompt token
        self.prompt_mean[index] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L'+1, H) query-token and prompt-mean states: every layer, or up to the
        layer the capture stopped at."""
        if any(t is None for t in self.query_token):
            raise RuntimeError("the prefill was not captured at every layer")
        return torch.stack(self.query_token, 1), torch.stack(self.prompt_mean, 1)  # type: ignore[arg-type]

    def prompt_states(self) -> list[PromptStates]:
        """The captured states, one `PromptStates` (L+1, H) per prompt of the batch."""
        query, mean = self.stacked()
        return [
            PromptStates(query_token=q, prompt_mean=m) for q, m in zip(query, mean, strict=True)
        ]


class StopForward(Exception):
    """Raised by the hook of the last layer a prefill needs: the layers above it never run."""


@contextmanager
def capture_prefill(
    model: PreTrainedModel, attention_mask: torch.Tensor, *, until_layer: int | None = None
) -> Iterator[PrefillCapture]:
    """Hooks on the embeddings (layer 0) and every decoder layer, for the `with` block.
    With `until_layer`, only layers 0..until_layer are captured and the hook of the last
    one raises `StopForward` (the caller catches it): a prefill that stops there."""
    layers = decoder_layers(model)
    last = len(layers) if until_layer is None else until_layer
    if not 0 <= last <= len(layers):
        raise ValueError(f"until_layer={until_layer}: the model has layers 0..{len(layers)}")
    capture = PrefillCapture(attention_mask)
    capture.query_token = [None] * (last + 1)
    capture.prompt_mean = [None] * (last + 1)
    stops = until_layer is not None

    def hook_for(index: int) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            capture.record(index, hidden_of(output))
            if stops and index == last:
                raise StopForward

        return hook

    modules = [model.get_input_embeddings(), *layers][: last + 1]
    with hooked(Hook(module, hook_for(i)) for i, module in enumerate(modules)):
        yield capture
