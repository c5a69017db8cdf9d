"""Run or resume one improvement session: the graph's event stream feeds the event log
and any live consumer (the CLI's progress bars and decision lines)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, copy_checkpoint
from langgraph.checkpoint.base.id import uuid6

from engines.base import Engine
from graph.build import build_graph
from graph.policy import SessionPolicy, masked_policy
from graph.state import SessionState
from graph.versions import EngineLoader, version_loader
from storage import ArtifactStore, Event, SessionInfo, Store
from storage.layout import SessionLayout
from storage.records import RENAMED_NODES
from tasks.base import Task

EventSink = Callable[[Event], None]


def new_session_id(task: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{task.split(':')[0]}-{uuid.uuid4().hex[:6]}"


def initial_state(
    session_id: str, policy: SessionPolicy, engine: Engine, task: Task
) -> SessionState:
    return SessionState(
        session_id=session_id,
        task=task.name,
        model=engine.name,
        started_at=time.time(),
        cycle=0,
        current_version="v0",
        candidate_version=None,
        best_version="v0",
        versions={},
        probe=None,
        retrains=0,
        train={},
        status="running",
    )


def renamed_node_problem(session_id: str, checkpoint: Checkpoint) -> str | None:
    """Why a checkpoint cannot resume, if it stopped before a node this graph calls by
    another name (`RENAMED_NODES`): LangGraph would find nothing to run and end the session
    there. Every other checkpoint of an older session resumes.

    >>> problem = renamed_node_problem("s", {"channel_values": {"branch:to:refit": None}})
    >>> problem.split(", and")[0]
    "session 's' stopped before its node 'refit', which is now 'refit_probe_on_samples'"
    """
    for old in RENAMED_NODES:
        if f"branch:to:{old}" in checkpoint["channel_values"]:
            return (
                f"session {session_id!r} stopped before its node {old!r}, which is now "
                f"{RENAMED_NODES[old]!r}, and its checkpoint cannot resume there: finish it "
                "with the autodidact that ran it, or start a new session"
            )
    return None


@dataclass
class Session:
    """One session's wiring: the store, its artifact folder, the compiled graph."""

    session_id: str
    policy: SessionPolicy
    store: Store
    task: Task
    engine: Engine
    load_engine: EngineLoader | None = None  # None: the policy's engine (`version_loader`)
    recorded: SessionInfo | None = field(default=None, init=False, repr=False)  # last row put

    @property
    def layout(self) -> SessionLayout:
        return SessionLayout.of(self.store.root, self.session_id)

    @property
    def folder(self) -> Path:
        return self.layout.folder

    @property
    def config(self) -> RunnableConfig:
        return {"configurable": {"thread_id": self.session_id}, "recursion_limit": 500}

    def graph(self) -> Any:
        artifacts = ArtifactStore(self.folder)
        return build_graph(
            self.policy,
            self.engine,
            self.store,
            task=self.task,
            artifacts=artifacts,
            load_engine=self.load_engine or version_loader(self.policy.engine, self.engine),
        )

    def run(self, *, resume: bool = False, on_event: EventSink | None = None) -> SessionState:
        """Run to the monitor's stop; with `resume`, continue from the last checkpoint."""
        graph = self.graph()
        # a process killed mid-write left its temp files; this one is the session's writer
        ArtifactStore(self.folder).remove_partial_writes()
        if not resume:
            self.folder.mkdir(parents=True, exist_ok=True)
            saved = masked_policy(self.policy)  # no secret on disk
            ArtifactStore(self.folder).write_json(SessionLayout.POLICY, saved)
        inputs = (
            None if resume else initial_state(self.session_id, self.policy, self.engine, self.task)
        )
        if resume:
            self._refuse_renamed_node()
            self._rerun_unfinished_step(graph)
        self._record_session("running", graph)
        # durability="sync": a node starts only once the previous one's checkpoint is
        # written, so after a kill -9 no completed node runs again.
        stream = graph.stream(
            inputs,
            self.config,
            context=self.policy,
            stream_mode=["custom", "updates"],
            durability="sync",
        )
        try:
            with contextlib.closing(stream):  # on any error the graph has stopped after this
                for mode, chunk in stream:
                    if mode == "custom":
                        self._publish(chunk, on_event)
                    else:
                        self._record_session("running", graph)
        except BaseException:
            self._record_interrupted(graph)
            raise
        state: SessionState = graph.get_state(self.config).values  # type: ignore[assignment]
        finished = state.get("status") == "finished"
        self._record_session("finished" if finished else "interrupted", graph)
        return state

    def mark_interrupted(self) -> None:
        """Record the session `interrupted` now: for a process that is about to end without
        unwinding (on a signal), where `run`'s own handler never runs. From the last row
        this process put, so that nothing but the registry write runs: no graph built, no
        checkpoint read (the signal may have paused a thread holding the checkpointer)."""
        if self.recorded is None:
            self._record_interrupted(self.graph())
            return
        interrupted = self.recorded.model_copy(
            update={"status": "interrupted", "updated_at": time.time()}
        )
        with contextlib.suppress(Exception):  # best effort, as `_record_interrupted`
            self.store.events.put_session(interrupted)

    def _record_interrupted(self, graph: Any) -> None:
        # best effort: with the store gone this fails too, and must not hide why
        with contextlib.suppress(Exception):
            self._record_session("interrupted", graph)

    def _refuse_renamed_node(self) -> None:
        saved = self.store.checkpointer.get_tuple(self.config)
        problem = saved and renamed_node_problem(self.session_id, saved.checkpoint)
        if problem:
            raise ValueError(problem)

    def _rerun_unfinished_step(self, graph: Any) -> None:
        """Make `resume` run again the step that was under way when the session stopped.
        Its node's events reach the log through the stream of the process that ran it;
        when that stream stops (a signal, a full disk, a lost store, a kill), the node may
        still finish in its worker thread and save its writes. Resumed from those, the node
        would be skipped and its missing events never logged. So the latest checkpoint is
        written again under a new id, with the writes of that step's tasks left out (any
        other pending write, such as LangGraph's own input writes, kept): the node runs
        again, and logs each event once, as after a kill -9 mid-node."""
        saver = self.store.checkpointer
        saved = saver.get_tuple(self.config)
        pending = (saved.pending_writes or []) if saved else []
        step_tasks = {task.id for task in graph.get_state(self.config).tasks}
        if saved is None or not any(task_id in step_tasks for task_id, _, _ in pending):
            return
        checkpoint = copy_checkpoint(saved.checkpoint)
        checkpoint["id"] = str(uuid6(clock_seq=saved.metadata.get("step", -1)))
        config = saver.put(saved.config, checkpoint, saved.metadata, {})
        kept: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in pending:
            if task_id not in step_tasks:
                kept.setdefault(task_id, []).append((channel, value))
        for task_id, writes in kept.items():
            saver.put_writes(config, writes, task_id)

    def _publish(self, payload: dict[str, Any], on_event: EventSink | None) -> None:
        event = Event(session_id=self.session_id, seq=0, **payload)
        if event.kind != "progress":
            event = self.store.events.append(event) or event
        if on_event:
            on_event(event)

    def _record_session(self, status: str, graph: Any) -> None:
        values = graph.get_state(self.config).values or {}
        history = values.get("history", [])
        now = time.time()
        previous = self.store.events.get_session(self.session_id)
        info = SessionInfo(
            session_id=self.session_id,
            status=status,  # type: ignore[arg-type]
            task=self.task.name,
            model=self.engine.name,
            store_url=self.store.url,
            created_at=previous.created_at if previous else now,
            updated_at=now,
            cycles=max((h.cycle for h in history), default=0),
            best_accuracy=max((h.accuracy for h in history), default=None),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        self.store.events.put_session(info)
        self.recorded = info
