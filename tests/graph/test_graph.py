"""The improvement graph wired end to end on a tiny random Llama with the quick preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import open_store
from tests.session_support import odd_length, run_tiny_session, run_with_verifier


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as opened:
        yield opened


def test_two_cycle_session_completes_and_records_everything(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_tiny_session(store)
    assert state["status"] == "finished"
    cycles = [h.cycle for h in state["history"]]
    assert cycles[0] == 0 and max(cycles) >= 1
    assert state["decisions"], "the monitor decided at least once"
    assert (Path(store.root) / "sessions/s1/probes/probe-0/card.json").is_file(), (
        "a probe was fitted on train-split answers at the start"
    )
    assert state["probe"] == f"probes/cycle-{state['cycle']}", "then refit on each cycle's samples"
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


def test_the_probe_is_refit_every_cycle_from_the_loops_own_samples(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_with_verifier(
        store, odd_length, "refit", **{"acquire.prompts_per_cycle": "24"}
    )
    refits = [e for e in events if e.node == "refit_probe_on_samples" and e.kind == "node_end"]
    assert len(refits) == state["cycle"] >= 1, "one refit per cycle"
    assert state["probe"] == f"probes/cycle-{state['cycle']}", refits[-1].message
    assert (Path(store.root) / "sessions/refit" / state["probe"] / "card.json").is_file()
    last = state["history"][-1]
    assert last.tokens_sampled > 0 and last.prompts_sampled == 24
    assert last.wasted_share is not None and 0.0 <= last.wasted_share <= 1.0
    assert last.predicted_accuracy == pytest.approx(1 - (last.mean_risk or 0.0))
    assert last.logprob_auroc is not None or last.accuracy in (0.0, 1.0)


def test_a_session_whose_start_probe_fails_gets_one_from_its_first_cycle(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_with_verifier(
        store,
        odd_length,
        "late-probe",
        **{"probe.items": "8", "acquire.prompts_per_cycle": "24", "monitor.max_cycles": "1"},
    )
    start = next(e for e in events if e.node == "fit_probe_on_answers" and e.kind == "error")
    assert "no probe fitted" in start.message
    assert state["probe"] == "probes/cycle-1", "fitted from cycle 1's samples"
    assert state["history"][-1].mean_risk is not None, "cycle 1's evaluation carries risk"


def test_all_wrong_samples_keep_waiting_and_say_how_many_of_each(store) -> None:  # type: ignore[no-untyped-def]
    state, events = run_with_verifier(
        store,
        lambda _answer, _refs: False,
        "all-wrong",
        **{"acquire.prompts_per_cycle": "24", "monitor.max_cycles": "1"},
    )
    (refit,) = [e for e in events if e.node == "refit_probe_on_samples" and e.kind == "node_end"]
    assert "24 prompts, 0 right and 48 wrong samples" in refit.message
    assert state["probe"] in (None, "probes/probe-0"), "no refit: the session keeps its probe"
