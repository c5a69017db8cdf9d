"""What the graph hands its nodes besides state and policy: the model versions (engines
loaded on demand) and the session's artifact store, with the (de)serialization of the
bulky things the state only names."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.acquire import Attempt
from agents.selection import PreferencePair, SFTExample
from engines.base import Engine, Sample
from graph.state import SessionState, VersionRecord
from tasks.base import Item

EngineLoader = Callable[[Path], Engine]


def load_engine_from(path: Path) -> Engine:
    from engines.hf import HFEngine

    return HFEngine.load(str(path))


@dataclass
class Workbench:
    base_engine: Engine  # version v0, the model the session started from
    artifacts: Any  # storage.ArtifactStore of this session
    load_engine: EngineLoader = load_engine_from
    fallback: Callable[[str], str] | None = None  # risk_adaptive's fallback chat model
    _loaded: dict[str, Engine] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.artifacts.root)

    def engine(self, state: SessionState, version: str | None = None) -> Engine:
        """The engine of a model version (default: the current one), loaded once."""
        name = version or state.get("current_version", "v0")
        if name == "v0":
            return self.base_engine
        if name not in self._loaded:
            self._loaded.clear()  # one trained version in memory at a time
            self._loaded[name] = self.load_engine(Path(state["versions"][name]["path"] or ""))
        return self._loaded[name]

    def register(self, name: str, path: Path) -> Engine:
        self._loaded.clear()
        self._loaded[name] = self.load_engine(path)
        return self._loaded[name]

    def trainable_copy(self, state: SessionState) -> tuple[Any, Any]:
        """A copy of the current version's model to train; the engine's stays untouched."""
        engine = self.engine(state)
        return copy.deepcopy(engine.model), engine.tokenizer  # type: ignore[attr-defined]

    def version_dir(self, name: str) -> Path:
        """Where the new version `name` is to be written. A folder already there is an
        orphan: a run killed after writing it and before its node was checkpointed, so no
        checkpoint names it. It is removed; the re-run node (same seed, same data) writes
        it again."""
        path = self.root / "versions"
        path.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(path / name, ignore_errors=True)
        return path / name

    def save_attempts(self, cycle: int, attempts: Sequence[Attempt]) -> str:
        name = f"cycle-{cycle}/attempts.jsonl"
        self.artifacts.write_jsonl(name, [attempt_to_row(a) for a in attempts])
        return name

    def load_attempts(self, name: str) -> list[Attempt]:
        return [attempt_from_row(row) for row in self.read_jsonl(name)]

    def save_data(
        self, cycle: int, sft: Sequence[SFTExample], pairs: Sequence[PreferencePair]
    ) -> dict[str, Any]:
        sft_name, pairs_name = f"cycle-{cycle}/sft.jsonl", f"cycle-{cycle}/pairs.jsonl"
        self.artifacts.write_jsonl(sft_name, [asdict(e) for e in sft])
        self.artifacts.write_jsonl(pairs_name, [asdict(p) for p in pairs])
        return {
            "sft_artifact": sft_name,
            "pairs_artifact": pairs_name,
            "sft": len(sft),
            "pairs": len(pairs),
        }

    def load_data(self, data: dict[str, Any]) -> tuple[list[SFTExample], list[PreferencePair]]:
        sft = [SFTExample(**row) for row in self.read_jsonl(data["sft_artifact"])]
        pairs = [PreferencePair(**row) for row in self.read_jsonl(data["pairs_artifact"])]
        return sft, pairs

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        import json

        path = Path(self.artifacts.verify(name))
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def attempt_to_row(attempt: Attempt) -> dict[str, Any]:
    item = attempt.item
    return {
        "item": {
            "id": item.id,
            "prompt": item.prompt,
            "answers": list(item.answers),
            "group": item.group,
        },
        "samples": [asdict(s) for s in attempt.samples],
        "risk": attempt.risk,
        "synthesized": attempt.synthesized,
    }


def attempt_from_row(row: dict[str, Any]) -> Attempt:
    raw = row["item"]
    item = Item(raw["id"], raw["prompt"], tuple(raw["answers"]), raw["group"])
    return Attempt(
        item, tuple(Sample(**s) for s in row["samples"]), row["risk"], row["synthesized"]
    )


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
