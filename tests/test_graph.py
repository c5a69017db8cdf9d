"""The improvement graph wired end to end on a tiny random Llama with the quick preset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from graph.policy import resolve_policy
from graph.session import Session
from storage import open_store
from tasks import Task, get_task
from tests.tiny_models import tiny_engine


def coin_flip_task() -> Task:
    """Arithmetic prompts whose verifier passes the items with an even answer, whatever
    the random model says: both labels, training data and a probe all exist."""
    base = get_task("arithmetic", n=100, digits=1)
    return replace(
        base, verifier=lambda _answer, refs: int(refs[0]) % 2 == 0, verifier_name="parity"
    )


def tiny_policy(**sets: str):  # type: ignore[no-untyped-def]
    overrides = [
        "acquire.prompts_per_cycle=8",
        "acquire.samples_per_prompt=2",
        "acquire.max_new_tokens=6",
        "select.min_examples=1",
        "optimize.batch_size=4",
        "optimize.max_steps=1",
        "evaluate.dev_limit=8",
        "evaluate.test_limit=8",
        "evaluate.max_new_tokens=6",
        "probe.items=90",
        "monitor.max_cycles=2",
        "monitor.min_gain=0.0",
        "monitor.patience=3",
    ] + [f"{k}={v}" for k, v in sets.items()]
    return resolve_policy("quick", None, overrides)


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as opened:
        yield opened


def run_tiny_session(store, session_id: str = "s1", **sets: str):  # type: ignore[no-untyped-def]
    from engines.hf import HFEngine

    task = coin_flip_task()
    events = []
    session = Session(
        session_id,
        tiny_policy(**sets),
        store,
        task,
        tiny_engine(),
        load_engine=lambda p: HFEngine.load(str(p)),
    )
    return session.run(on_event=events.append), events


def test_two_cycle_session_completes_and_records_everything(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_tiny_session(store)
    assert state["status"] == "finished"
    cycles = [h.cycle for h in state["history"]]
    assert cycles[0] == 0 and max(cycles) >= 1
    assert state["decisions"], "the monitor decided at least once"
    assert state["probe"] == "probes/probe-0", "a probe was fitted on train-split answers"
    assert "probe_fit_auroc" in state, "the drift baseline comes from the probe's held-out rows"
    assert all(h.mean_risk is not None for h in state["history"]), "every evaluation carries risk"
    assert state["decisions"][-1].action == "stop"
    assert {"initial", "final", "cycles"} <= set(state["final"])
    kinds = {e.kind for e in events}
    assert {"node_start", "node_end", "decision", "metric"} <= kinds
    logged = store.events.read("s1")
    emitted = [e for e in events if e.kind != "progress"]
    assert [(e.key, e.message) for e in logged] == [(e.key, e.message) for e in emitted], (
        "the log keeps every non-progress event the session emitted, once, in order"
    )
    assert [e.seq for e in logged] == list(range(1, len(logged) + 1))
    info = store.events.get_session("s1")
    assert info is not None and info.status == "finished"


def test_held_out_metrics_need_both_classes() -> None:
    import numpy as np

    from probes.metrics import auroc_and_ece

    assert auroc_and_ece(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])) == (None, None)
    auroc, ece = auroc_and_ece(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert auroc == 1.0 and ece is not None and 0.0 <= ece <= 1.0
