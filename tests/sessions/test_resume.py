"""Crash-resume: a tiny session `kill -9`ed during optimize, then `autodidact resume`d in a
new process, ends exactly like an uninterrupted run of the same seed, with every event
logged once and no completed node done again. Both backends.

The sessions run in subprocesses (tests/session_worker.py: the CLI with the tiny engine);
the test watches the store they write to and kills them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import NoReturn

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import Loaders
from storage import Event, Store, open_store
from storage.layout import SessionLayout
from tests.session_worker import (
    Outcome,
    assert_same_session,
    checkpoint_values,
    launch,
    outcome,
    read_events,
    wait_for_key,
)

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.integration)]
DONE_BEFORE_OPTIMIZE = {(0, "fit_probe_on_answers"), (0, "baseline"), (1, "acquire"), (1, "select")}


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/autodidact.db"
    return str(request.getfixturevalue("redis_url"))  # sessions get unique ids


def assert_checkpoint_is_select(store: Store, session: str) -> None:
    """The last checkpoint is the one after select: data chosen, no v1 trained."""
    values = checkpoint_values(store, session)
    assert values["cycle"] == 1 and values["data"]["sft"] > 0
    assert "v1" not in values["versions"]


def assert_log_well_formed(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_kill_9_during_optimize_then_resume_matches_an_uninterrupted_run(
    store_url: str, tmp_path: Path, reference: Outcome
) -> None:
    session = f"crash-{uuid.uuid4().hex[:8]}"
    # slow checkpoint writes: optimize must not start before select's checkpoint is written
    first = launch(store_url, tmp_path, session, slow_checkpoints=0.3)
    with open_store(store_url, tmp_path) as store:
        wait_for_key(store.events, session, "c1/optimize/0", first)
        first.kill()
        before = store.events.read(session)

        assert first.proc.returncode == -9
        assert ("optimize", "node_end") not in {(e.node, e.kind) for e in before}, (
            "the kill must land inside optimize"
        )
        assert_checkpoint_is_select(store, session)

        second = launch(
            store_url, tmp_path, session, resume=True, events_out=tmp_path / "resumed.jsonl"
        )
        assert second.wait() == 0, second.output()
        after = store.events.read(session)
        assert_same_session(outcome(store, session), reference)

    emitted = read_events(tmp_path / "resumed.jsonl")
    assert emitted[0].key == "c1/optimize/0", "resume starts at the interrupted node"
    redone = {(e.cycle, e.node) for e in emitted} & DONE_BEFORE_OPTIMIZE
    assert not redone, f"completed nodes ran again: {redone}"
    assert_log_well_formed(after)
    assert after[: len(before)] == before, "what the killed run logged is kept as it was"
    resumed_from = min(e.ts for e in emitted)
    assert all(e.ts >= resumed_from for e in after[len(before) :]), (
        "every later entry comes from the resumed process"
    )
    assert {e.key for e in after[len(before) :]} <= {e.key for e in emitted}


def test_kill_between_writing_a_version_and_checkpointing_it(
    tmp_path: Path, reference: Outcome
) -> None:
    """The worst moment: versions/v1 renamed into place, its node not yet checkpointed.
    The resumed optimize must train v1 again, not stop on the orphaned folder."""
    url, session = f"sqlite:///{tmp_path}/autodidact.db", "orphan"
    first = launch(url, tmp_path, session, die_after_version=True)
    assert first.wait() == -9, first.output()
    merged = SessionLayout.of(tmp_path, session).merged("v1")
    assert merged.is_dir(), "the kill came after the version was written"
    with open_store(url, tmp_path) as store:
        assert_checkpoint_is_select(store, session)
        second = launch(url, tmp_path, session, resume=True)
        assert second.wait() == 0, second.output()
        assert_same_session(outcome(store, session), reference)
        assert_log_well_formed(store.events.read(session))


def no_model(_model: str) -> NoReturn:
    raise AssertionError("the model must not load")


def test_resume_of_a_session_the_store_does_not_hold_is_one_line(tmp_path: Path) -> None:
    """E.g. `resume` without the --store the session ran with: exit 2 before any model
    loads, not an empty run recorded as interrupted."""
    from tests.session_support import tiny_policy

    saved = SessionLayout.of(tmp_path, "elsewhere").policy
    saved.parent.mkdir(parents=True)
    saved.write_text(tiny_policy().model_dump_json())
    result = CliRunner().invoke(
        make_app(Loaders(load_engine=no_model)), ["resume", "elsewhere", "--root", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "no checkpoint" in result.output and "--store" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_run_over_an_existing_session_is_one_line(tmp_path: Path) -> None:
    """`run --session-id` of a checkpointed session would restart it on top of its own
    history: refused, pointing at `resume`."""
    url = f"sqlite:///{tmp_path}/autodidact.db"
    with open_store(url, tmp_path) as store:
        config: RunnableConfig = {"configurable": {"thread_id": "taken", "checkpoint_ns": ""}}
        store.checkpointer.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
    args = ["run", "--preset", "quick", "--session-id", "taken", "--store", url]
    result = CliRunner().invoke(
        make_app(Loaders(load_engine=no_model)), [*args, "--root", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "already exists" in result.output and "autodidact resume taken" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("old", ["probe", "refit"])
def test_resume_before_a_renamed_node_is_one_line(tmp_path: Path, old: str) -> None:
    """A session checkpointed before the probe nodes were renamed, stopped right before
    one of them (LangGraph's trigger channel `branch:to:<node>` set), has no node to go on
    to here: refused in one line, exit 2, before any model loads. (A checkpoint before
    any other node resumes: only the two names changed.)"""
    from tests.session_support import tiny_policy

    url = f"sqlite:///{tmp_path}/autodidact.db"
    saved = SessionLayout.of(tmp_path, "old").policy
    saved.parent.mkdir(parents=True)
    saved.write_text(tiny_policy().model_dump_json())
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"cycle": 1, "probe": "probes/probe-0", f"branch:to:{old}": None}
    checkpoint["channel_versions"] = {"cycle": 1, f"branch:to:{old}": 1}
    with open_store(url, tmp_path) as store:
        config: RunnableConfig = {"configurable": {"thread_id": "old", "checkpoint_ns": ""}}
        store.checkpointer.put(config, checkpoint, {"source": "loop", "step": 4}, {})
    result = CliRunner().invoke(
        make_app(Loaders(load_engine=no_model)),
        ["resume", "old", "--store", url, "--root", str(tmp_path)],
    )
    assert result.exit_code == 2, result.output
    assert f"before its node {old!r}, which is now" in result.output
    assert "cannot resume there" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_older_checkpoint_before_any_other_node_is_not_refused() -> None:
    """The state key `probe` (the session's probe) is no node: only a trigger channel of
    a renamed node stops a resume."""
    from graph.session import renamed_node_problem

    channels = {"probe": "probes/probe-0", "branch:to:optimize": None}
    assert renamed_node_problem("s", {"channel_values": channels}) is None  # type: ignore[typeddict-item]
