"""`build_graph(policy, engine, store)`: the session's fixed structure. Behaviour comes
from the policy, passed at run time as the graph's context (`context_schema`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agents.chat_model import make_chat_model
from agents.planner import Planner
from engines.base import Engine
from graph.nodes import Nodes
from graph.policy import SessionPolicy
from graph.state import RECORD_TYPES, SessionState
from graph.versions import EngineLoader, ModelVersions, load_engine_from
from storage import ArtifactStore
from storage.checkpointer import restoring
from storage.layout import SessionLayout
from tasks.base import Task


def build_graph(
    policy: SessionPolicy,
    engine: Engine,
    store: Any,
    *,
    task: Task,
    artifacts: ArtifactStore,
    load_engine: EngineLoader = load_engine_from,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Wire fit_probe_on_answers -> baseline -> (acquire -> select -> refit_probe_on_samples
    -> optimize -> evaluate -> monitor)* -> finalize, checkpointed by the store's checkpointer (thread id = session id).

    `policy` builds the planners (chat models named in it); the run's behaviour reads the
    policy passed as context to `invoke`/`stream`."""
    versions = ModelVersions(engine, artifacts.root, load_engine, versions_root(policy, artifacts))
    planner = Planner.from_policy(policy, engine)
    nodes = Nodes(versions, artifacts, task, planner, fallback_answerer(policy, engine))
    return wire(nodes).compile(checkpointer=restoring_records(store.checkpointer))


def wire(nodes: Nodes) -> StateGraph[Any, Any, Any, Any]:
    """The session's nodes and fixed edges; the routes after the two probe fits, select and
    monitor are in their `Command[Literal[...]]` return types."""
    graph = StateGraph(SessionState, context_schema=SessionPolicy)
    graph.add_node("fit_probe_on_answers", nodes.fit_probe_on_answers)
    graph.add_node("baseline", nodes.baseline)
    graph.add_node("acquire", nodes.acquire)
    graph.add_node("select", nodes.select)
    graph.add_node("refit_probe_on_samples", nodes.refit_probe_on_samples)
    graph.add_node("optimize", nodes.optimize)
    graph.add_node("evaluate", nodes.evaluate)
    graph.add_node("monitor", nodes.monitor)
    graph.add_node("finalize", nodes.finalize)
    graph.add_edge(START, "fit_probe_on_answers")
    graph.add_edge("baseline", "acquire")
    graph.add_edge("acquire", "select")
    graph.add_edge("optimize", "evaluate")
    graph.add_edge("evaluate", "monitor")
    graph.set_finish_point("finalize")
    return graph


def versions_root(policy: SessionPolicy, artifacts: ArtifactStore) -> Path | None:
    """Where trained versions go when the cluster has shared storage: every node reads them
    there (None: the session's own folder)."""
    storage = policy.cluster.storage
    if storage is None:
        return None
    return SessionLayout.of(Path(storage).expanduser().absolute(), artifacts.root.name).versions


def restoring_records(checkpointer: BaseCheckpointSaver[Any]) -> BaseCheckpointSaver[Any]:
    """The checkpointer, its serializer allowed to restore the state's records (and
    LangGraph's own safe types), nothing else: no warning per type on resume, and a
    checkpoint cannot name arbitrary classes to build."""
    clone = copy.copy(checkpointer)
    clone.serde = restoring(RECORD_TYPES)
    return clone


def fallback_answerer(policy: SessionPolicy, engine: Engine) -> Callable[[str], str] | None:
    """The chat model `risk_adaptive` routes high-risk prompts to, if the policy names one."""
    if policy.refine.fallback_model is None:
        return None
    model = make_chat_model(policy.refine.fallback_model, engine)
    if model is None:
        return None
    return lambda prompt: str(model.invoke(prompt).content)
