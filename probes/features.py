"""Probe features from prefill hidden states, and their on-disk form.

A feature is named like the engine's capture points: `layer.{i}.{kind}` for one layer
(i = 0 is the embedding output, 1..L the decoder layers), `layer.{i}+{j}+{k}.{kind}` for
several layers concatenated in that order. Kinds for text models: `query_token` (the last
prompt token's state) and `prompt_mean` (mean over the prompt's tokens).

On disk, a `FeatureSet` is one tensor per (layer, kind), named `layer.{i}.{kind}`, shape
(N, H), spread over safetensors shards, plus `features.index.json` naming the shard of every
tensor, the model fingerprint, the prompt-template hash and the item ids in row order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.numpy import load_file, save_file

from engines.base import FEATURE_KINDS, FormatsPrompts, PromptStates

INDEX_FILE = "features.index.json"
FEATURES_SCHEMA_VERSION = 1
Array = NDArray[np.float32]


@dataclass(frozen=True, order=True)
class FeatureSpec:
    """Which states feed a probe: one kind, one or more layers (concatenated in order)."""

    kind: str
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a feature needs at least one layer")

    @property
    def name(self) -> str:
        """
        >>> FeatureSpec("query_token", (12,)).name
        'layer.12.query_token'
        >>> FeatureSpec("prompt_mean", (4, 8)).name
        'layer.4+8.prompt_mean'
        """
        return f"layer.{'+'.join(map(str, self.layers))}.{self.kind}"

    @classmethod
    def parse(cls, name: str) -> FeatureSpec:
        """
        >>> FeatureSpec.parse("layer.4+8.prompt_mean")
        FeatureSpec(kind='prompt_mean', layers=(4, 8))
        """
        prefix, layers, kind = name.split(".", 2)
        if prefix != "layer" or not kind:
            raise ValueError(f"bad feature name {name!r}; expected layer.<i>[+<j>...].<kind>")
        return cls(kind, tuple(int(i) for i in layers.split("+")))

    def vector(self, states: PromptStates) -> torch.Tensor:
        """(len(layers) * H,) feature of one prompt, straight from its captured states."""
        per_layer = states.feature(self.kind)  # (L+1, H)
        return per_layer[list(self.layers)].reshape(-1)


def prompt_template_hash(engine: object) -> str:
    """Hash of how the engine wraps a prompt (its chat template), so a probe is never
    applied to states of prompts formatted another way. Engines that do not format
    prompts (`FormatsPrompts`) feed them as they are."""
    template = "\x00{prompt}\x00"
    rendered = engine.format_prompt(template) if isinstance(engine, FormatsPrompts) else template
    return hashlib.sha256(str(rendered).encode()).hexdigest()[:16]


def stack_states(states: Sequence[PromptStates], kind: str) -> Array:
    """(N, L+1, H) float32 array of one feature kind over prompts."""
    if not states:
        raise ValueError("no prompt states to stack")
    return torch.stack([s.feature(kind).float().cpu() for s in states]).numpy()


@dataclass
class FeatureSet:
    """Every layer's features of one run, rows aligned with `item_ids`."""

    item_ids: list[str]
    arrays: dict[str, Array]  # kind -> (N, L+1, H)
    fingerprint: str
    template_hash: str
    model_name: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, array in self.arrays.items():
            if array.ndim != 3 or array.shape[0] != len(self.item_ids):
                raise ValueError(
                    f"feature kind {kind!r} has shape {array.shape}; expected "
                    f"({len(self.item_ids)}, layers, hidden)"
                )

    @classmethod
    def from_states(
        cls,
        states: Sequence[PromptStates],
        item_ids: Sequence[str],
        *,
        fingerprint: str,
        template_hash: str,
        model_name: str = "",
        kinds: Sequence[str] = FEATURE_KINDS,
    ) -> FeatureSet:
        if len(states) != len(item_ids):
            raise ValueError(f"{len(states)} prompt states for {len(item_ids)} items")
        arrays = {kind: stack_states(states, kind) for kind in kinds}
        return cls(list(item_ids), arrays, fingerprint, template_hash, model_name)

    @property
    def kinds(self) -> list[str]:
        return list(self.arrays)

    @property
    def num_layers(self) -> int:
        """L+1: the embedding output and every decoder layer."""
        return next(iter(self.arrays.values())).shape[1]

    def __len__(self) -> int:
        return len(self.item_ids)

    def matrix(self, spec: FeatureSpec) -> Array:
        """(N, len(layers) * H) design matrix of one feature spec."""
        if spec.kind not in self.arrays:
            raise KeyError(f"feature kind {spec.kind!r} not in this set (has {self.kinds})")
        if max(spec.layers) >= self.num_layers or min(spec.layers) < 0:
            raise KeyError(f"{spec.name}: layers run 0..{self.num_layers - 1}")
        selected = self.arrays[spec.kind][:, list(spec.layers), :]  # (N, k, H)
        return selected.reshape(len(self), -1)

    def subset(self, rows: Sequence[int] | NDArray[np.int64]) -> FeatureSet:
        index = np.asarray(rows, dtype=np.int64)
        return FeatureSet(
            [self.item_ids[i] for i in index],
            {kind: array[index] for kind, array in self.arrays.items()},
            self.fingerprint,
            self.template_hash,
            self.model_name,
            dict(self.meta),
        )

    @classmethod
    def concat(cls, parts: Sequence[FeatureSet]) -> FeatureSet:
        """Rows of several sets of one model and prompt template, in order (the first
        set's kinds, name and meta)."""
        if not parts:
            raise ValueError("no feature sets to join")
        first = parts[0]
        for part in parts[1:]:
            if (part.fingerprint, part.template_hash) != (first.fingerprint, first.template_hash):
                raise ValueError("cannot join features of different models or prompt templates")
        return cls(
            [item_id for part in parts for item_id in part.item_ids],
            {kind: np.concatenate([part.arrays[kind] for part in parts]) for kind in first.kinds},
            first.fingerprint,
            first.template_hash,
            first.model_name,
            dict(first.meta),
        )

    def save(self, folder: str | Path, *, max_shard_bytes: int = 256 * 2**20) -> Path:
        """Write the shards, then the index (written last, atomically: a folder with an
        index is complete). Returns the index path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shards: list[dict[str, Array]] = [{}]
        size = 0
        for kind, array in self.arrays.items():
            for layer in range(array.shape[1]):
                tensor = np.ascontiguousarray(array[:, layer, :])  # (N, H)
                if shards[-1] and size + tensor.nbytes > max_shard_bytes:
                    shards.append({})
                    size = 0
                shards[-1][f"layer.{layer}.{kind}"] = tensor
                size += tensor.nbytes
        weight_map: dict[str, str] = {}
        for number, shard in enumerate(shards, 1):
            name = f"features-{number:05d}-of-{len(shards):05d}.safetensors"
            _atomic(folder / name, partial(_save_shard, shard))
            weight_map.update(dict.fromkeys(shard, name))
        index = {
            "schema_version": FEATURES_SCHEMA_VERSION,
            "model_name": self.model_name,
            "fingerprint": self.fingerprint,
            "template_hash": self.template_hash,
            "kinds": self.kinds,
            "layers": list(range(self.num_layers)),
            "hidden_size": {kind: int(a.shape[2]) for kind, a in self.arrays.items()},
            "item_ids": self.item_ids,
            "meta": self.meta,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "weight_map": weight_map,
        }
        path = folder / INDEX_FILE
        _atomic(path, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSet:
        folder = Path(folder)
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"no {INDEX_FILE} in {folder}: not a saved feature set")
        index = json.loads(index_path.read_text())
        if index.get("schema_version") != FEATURES_SCHEMA_VERSION:
            raise ValueError(
                f"{index_path}: schema_version {index.get('schema_version')!r}, this code reads "
                f"{FEATURES_SCHEMA_VERSION}; re-collect the features"
            )
        tensors: dict[str, Array] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_file(str(folder / shard)))
        arrays = {
            kind: np.stack([tensors[name] for name in _layer_names(tensors, kind)], axis=1)
            for kind in index["kinds"]
        }
        return cls(
            list(index["item_ids"]),
            arrays,
            index["fingerprint"],
            index["template_hash"],
            index.get("model_name", ""),
            dict(index.get("meta", {})),
        )


def _layer_names(tensors: dict[str, Array], kind: str) -> list[str]:
    """The kind's tensor names in layer order (a kind may have fewer layers than another:
    a VLM's `visual` has one).

    >>> _layer_names(dict.fromkeys(["layer.10.q", "layer.2.q", "layer.0.v"]), "q")
    ['layer.2.q', 'layer.10.q']
    """
    parts = [name.split(".", 2) for name in tensors]
    layers = sorted(int(layer) for _, layer, named in parts if named == kind)
    return [f"layer.{i}.{kind}" for i in layers]


def _save_shard(shard: dict[str, Array], path: Path) -> None:
    save_file(shard, str(path))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write via a temp file in the same folder, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
