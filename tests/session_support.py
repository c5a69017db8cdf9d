"""Tiny sessions for tests and benchmarks: the coin-flip task, the tiny policy, and a run
of both on the tiny random Llama (tests/tiny_models.py), in this process."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from graph.policy import resolve_policy
from graph.session import Session
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
    """The quick preset cut to seconds: 8 prompts of 2 samples, one training step, 8 dev
    and test items, 2 cycles; `sets` overrides any field (`**{"monitor.max_cycles": "1"}`)."""
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


def run_on(store, task: Task, session_id: str, **sets: str):  # type: ignore[no-untyped-def]
    """A tiny session on `task` with the tiny policy and `sets`: (final state, events)."""
    from engines.hf import HFEngine

    events: list[Any] = []
    session = Session(
        session_id,
        tiny_policy(**sets),
        store,
        task,
        tiny_engine(),
        load_engine=lambda p: HFEngine.load(str(p)),
    )
    return session.run(on_event=events.append), events


def run_tiny_session(store, session_id: str = "s1", **sets: str):  # type: ignore[no-untyped-def]
    """The coin-flip task's tiny session: (final state, events)."""
    return run_on(store, coin_flip_task(), session_id, **sets)


def run_with_verifier(store, verifier, session_id: str, **sets: str):  # type: ignore[no-untyped-def]
    """The tiny session on the coin-flip task judged by `verifier` instead."""
    return run_on(store, replace(coin_flip_task(), verifier=verifier), session_id, **sets)


def odd_length(answer: str, _refs: tuple[str, ...]) -> bool:
    """Right when the (random) answer has an odd length: samples of one prompt differ."""
    return len(answer) % 2 == 1
