"""The bulky things a cycle produces, kept in the session's artifact store (the state
holds only their names): the samples acquire drew (JSONL) with the prefill features their
generation captured (a feature set: the pass-rate probe's rows), the data select chose."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.acquire import Attempt
from agents.evaluate import ItemResult
from agents.learnability import Evidence
from agents.selection import PreferencePair, Selected, SFTExample
from storage import ArtifactStore
from storage.layout import SessionLayout

if TYPE_CHECKING:
    from probes.features import FeatureSet


def save_attempts(artifacts: ArtifactStore, cycle: int, attempts: Sequence[Attempt]) -> str:
    name = SessionLayout.attempts_name(cycle)
    artifacts.write_jsonl(name, [a.to_row() for a in attempts])
    return name


def load_attempts(artifacts: ArtifactStore, name: str) -> list[Attempt]:
    return [Attempt.from_row(row) for row in read_jsonl(artifacts, name)]


def save_features(artifacts: ArtifactStore, cycle: int, features: FeatureSet | None) -> None:
    """The cycle's prefill features (rows aligned with its attempts), when captured."""
    if features is None:
        return
    name = SessionLayout.features_name(cycle)
    folder = artifacts.root / name
    features.save(folder)
    artifacts.add_dir(name, folder, kind="features")


def version_samples(
    artifacts: ArtifactStore, fingerprint: str, cycles: range
) -> list[tuple[list[Attempt], FeatureSet]]:
    """The attempts and features of every cycle in `cycles` that sampled the model with
    `fingerprint` (a version kept across cycles gathers rows from each)."""
    from probes.features import FeatureSet

    parts = []
    for cycle in cycles:
        name = SessionLayout.features_name(cycle)
        if artifacts.manifest().find(name) is None:
            continue
        features = FeatureSet.load(artifacts.verify(name))
        if features.fingerprint == fingerprint:
            parts.append((load_attempts(artifacts, SessionLayout.attempts_name(cycle)), features))
    return parts


def prompt_evidence(
    artifacts: ArtifactStore, drawn_by: Sequence[str], current: str
) -> list[Evidence]:
    """Every earlier cycle's samples per prompt (from its attempts and select's verdicts),
    each with how many version changes ago it was drawn (`drawn_by`: per cycle, the
    version acquire sampled; `current`: the version about to be sampled)."""
    evidence = []
    for cycle, ago in enumerate(versions_ago(drawn_by, current), start=1):
        verdicts_name = SessionLayout.verdicts_name(cycle)
        if artifacts.manifest().find(verdicts_name) is None:
            continue  # the cycle never reached select
        attempts = load_attempts(artifacts, SessionLayout.attempts_name(cycle))
        verdicts = read_jsonl(artifacts, verdicts_name)
        evidence += [
            Evidence(a.item.id, sum(v["correct"]), len(v["correct"]), ago)
            for a, v in zip(attempts, verdicts, strict=True)
        ]
    return evidence


def versions_ago(drawn_by: Sequence[str], current: str) -> list[int]:
    """For each cycle's drawing version, how many other versions drew (or draw now) after it.

    >>> versions_ago(["v0", "v1", "v1", "v3"], "v1")  # v3 rolled back: v1 again
    [2, 0, 0, 1]
    """
    lineage = [*drawn_by, current]
    return [
        len(set(lineage[i:]) - {lineage[i]}) if lineage[i] != current else 0
        for i in range(len(drawn_by))
    ]


def save_dev_answers(
    artifacts: ArtifactStore, cycle: int, version: str, results: Sequence[ItemResult]
) -> None:
    """A version's dev answers: each with its verdict, abstention and the probe's risk."""
    artifacts.write_jsonl(
        SessionLayout.dev_answers_name(cycle, version), [r.to_json() for r in results]
    )


def load_dev_answers(artifacts: ArtifactStore, cycle: int, version: str) -> list[ItemResult]:
    """The dev answers `version` gave when cycle `cycle` evaluated it."""
    rows = read_jsonl(artifacts, SessionLayout.dev_answers_name(cycle, version))
    return [ItemResult(**(row | {"answers": tuple(row["answers"])})) for row in rows]


def save_selected(artifacts: ArtifactStore, cycle: int, selected: Selected) -> dict[str, Any]:
    """The cycle's selected data and each sample's verdict saved; the state's record of it
    (names and counts)."""
    sft_name, pairs_name = SessionLayout.sft_name(cycle), SessionLayout.pairs_name(cycle)
    artifacts.write_jsonl(sft_name, [asdict(e) for e in selected.examples])
    artifacts.write_jsonl(pairs_name, [asdict(p) for p in selected.pairs])
    artifacts.write_jsonl(
        SessionLayout.verdicts_name(cycle),
        [{"correct": list(labels)} for labels in selected.verdicts],
    )
    return {
        "sft_artifact": sft_name,
        "pairs_artifact": pairs_name,
        "sft": len(selected.examples),
        "pairs": len(selected.pairs),
        "prompts": selected.prompts,
        "sample_accuracy": selected.sample_accuracy,
        "wasted_share": selected.wasted_share,
    }


def load_data(
    artifacts: ArtifactStore, data: dict[str, Any]
) -> tuple[list[SFTExample], list[PreferencePair]]:
    sft = [SFTExample(**row) for row in read_jsonl(artifacts, data["sft_artifact"])]
    pairs = [PreferencePair(**row) for row in read_jsonl(artifacts, data["pairs_artifact"])]
    return sft, pairs


def read_jsonl(artifacts: ArtifactStore, name: str) -> list[dict[str, Any]]:
    """The rows of a JSONL artifact, checked against its recorded hash first."""
    path = Path(artifacts.verify(name))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
