"""The session's model versions: v0 is the engine the session started from; each trained
version is a folder of merged weights, loaded into an engine on demand (one trained version
in memory at a time)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.base import Closeable, Engine, Releasable, ServesVersions, TrainableInPlace
from engines.factory import load_engine
from graph.state import SessionState, VersionRecord
from storage.layout import SessionLayout

EngineLoader = Callable[[Path], Engine]


def load_engine_from(path: Path) -> Engine:
    """The transformers engine of a trained version's merged folder."""
    return load_engine(str(path))


def version_loader(kind: str, base: Engine | None = None) -> EngineLoader:
    """How a session of engine `kind` loads a trained version's merged folder (the vLLM
    engine reloads merged weights too: engines/vllm.py says why); an engine that serves
    versions (the cluster engine) runs them on its own workers."""
    if isinstance(base, ServesVersions):
        return lambda path: base.for_version(str(path))
    if kind == "transformers":
        return load_engine_from
    return lambda path: load_engine(str(path), kind)


@dataclass
class ModelVersions:
    base_engine: Engine  # version v0, the model the session started from
    root: Path  # the session's folder; trained versions go under root/versions
    load_engine: EngineLoader = load_engine_from
    versions_root: Path | None = None  # where trained versions go (default: root/versions)
    _loaded: dict[str, Engine] = field(default_factory=dict)

    def engine(self, state: SessionState, version: str | None = None) -> Engine:
        """The engine of a model version (default: the current one), loaded once."""
        name = version or state.get("current_version", "v0")
        if name == "v0":
            return self.base_engine
        if name not in self._loaded:
            self._evict()  # one trained version in memory at a time
            self._loaded[name] = self.load_engine(Path(state["versions"][name]["path"] or ""))
        return self._loaded[name]

    def register(self, name: str, path: Path) -> Engine:
        self._evict()
        self._loaded[name] = self.load_engine(path)
        return self._loaded[name]

    def _evict(self) -> None:
        """Drop the loaded trained version; an engine with processes of its own (vLLM's)
        is closed now rather than whenever it is garbage-collected."""
        for engine in self._loaded.values():
            if isinstance(engine, Closeable):
                engine.close()
        self._loaded.clear()

    def trainable_copy(self, state: SessionState) -> tuple[Any, Any]:
        """A copy of the current version's model to train; the engine's stays untouched."""
        engine = self.engine(state)
        if not isinstance(engine, TrainableInPlace):
            raise TypeError(
                f"engine {engine.name!r} keeps no weights in this process to train: "
                "train on the cluster (cluster.backend 'ray')"
            )
        return copy.deepcopy(engine.model), engine.tokenizer

    def source(self, state: SessionState) -> str:
        """Where the current version's weights are, for a training worker to load: the
        session's model (as the base engine was given it) or a version's merged folder."""
        name = state.get("current_version", "v0")
        if name == "v0":
            base = self.base_engine
            return base.source if isinstance(base, ServesVersions) else base.name
        return str(state["versions"][name]["path"] or "")

    def release(self) -> None:
        """Hand back what generation holds on a cluster (its actors), before training."""
        for engine in (self.base_engine, *self._loaded.values()):
            if isinstance(engine, Releasable):
                engine.release()

    def version_dir(self, name: str) -> Path:
        """Where the new version `name` is to be written. A folder already there is an
        orphan: a run killed after writing it and before its node was checkpointed, so no
        checkpoint names it. It is removed; the re-run node (same seed, same data) writes
        it again."""
        path = self.versions_root or SessionLayout(self.root).versions
        path.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(path / name, ignore_errors=True)
        return path / name


def version_record(
    name: str, path: Path | None, parent: str | None, fingerprint: str
) -> VersionRecord:
    return VersionRecord(
        name=name,
        path=str(path) if path else None,
        parent=parent,
        fingerprint=fingerprint,
        dev_accuracy=None,
    )
