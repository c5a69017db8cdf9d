"""A one-cycle tiny session with `cluster.backend=ray` (generation on 2 Ray actors, training
in a 2-worker TorchTrainer), `kill -9`ed while it trains, then resumed from its SQLite
checkpoint in a new process: it finishes with the events, decisions, metrics and datasets
of the same session run uninterrupted in one process, and v1's weights and dev answers'
scores within float tolerance.
Fixed cycles, wall-clock budget rule off."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from storage import open_store
from tests.cluster_support import require_ray
from tests.session_worker import launch, outcome, wait_for_key
from tests.test_graph import run_tiny_session

pytestmark = pytest.mark.cluster

FIXED = {
    "monitor.max_cycles": "1",
    "monitor.max_wall_minutes": "10000",
    "monitor.project_wall_budget": "false",
}
RAY_TIMEOUT_S = 600.0  # Ray's start, actors and a TorchTrainer on a busy 2-core machine
ON_RAY = [f"{k}={v}" for k, v in FIXED.items()] + ["cluster.backend=ray"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "versions" / "v1" / "adapter" / "adapter_model.safetensors")


def assert_same_rows(expected: Path, found: Path) -> None:
    """The same JSONL rows: equal texts and verdicts, numbers within 1e-3."""
    mine, theirs = (
        [json.loads(line) for line in path.read_text().splitlines()] for path in (expected, found)
    )
    assert len(mine) == len(theirs)
    for one, other in zip(mine, theirs, strict=True):
        assert one.keys() == other.keys()
        for key, value in one.items():
            if isinstance(value, float):
                assert other[key] == pytest.approx(value, abs=1e-3), key
            else:
                assert other[key] == value, key


def test_ray_session_killed_while_training_resumes_to_one_process_result(
    tmp_path: Path,
) -> None:
    require_ray()
    local_root, url = tmp_path / "local", f"sqlite:///{tmp_path}/autodidact.db"
    with open_store(f"sqlite:///{local_root}/autodidact.db", local_root) as store:
        run_tiny_session(store, "local", **FIXED)
        expected = outcome(store, "local")
    session = f"ray-{uuid.uuid4().hex[:8]}"
    first = launch(url, tmp_path, session, sets=ON_RAY)
    with open_store(url, tmp_path) as store:
        wait_for_key(store.events, session, "c1/optimize/0", first, timeout=RAY_TIMEOUT_S)
        first.kill()
        killed = store.events.read(session)
        assert ("optimize", "node_end") not in {(e.node, e.kind) for e in killed}
        second = launch(url, tmp_path, session, resume=True)
        assert second.wait(RAY_TIMEOUT_S) == 0, second.output()
        resumed = outcome(store, session)
    assert resumed.status == "finished"
    assert resumed.keys == expected.keys, "events missing, extra or out of order"
    assert resumed.decisions == expected.decisions
    assert resumed.history == expected.history
    before_v1 = {k: v for k, v in expected.hashes.items() if k.endswith(".jsonl")}
    before_v1.pop("cycle-1/dev-v1.jsonl")  # v1's answers: v1 equals one process's to 1e-4
    assert {k: resumed.hashes[k] for k in before_v1} == before_v1, "samples or data differ"
    assert resumed.hashes.keys() == expected.hashes.keys()
    assert_same_rows(
        local_root / "sessions" / "local" / "cycle-1" / "dev-v1.jsonl",
        tmp_path / "sessions" / session / "cycle-1" / "dev-v1.jsonl",
    )
    mine = weights(local_root / "sessions" / "local")
    theirs = weights(tmp_path / "sessions" / session)
    worst = max(float((mine[k] - theirs[k]).abs().max()) for k in mine)
    assert worst <= 1e-4, f"LoRA weights differ by {worst}"
