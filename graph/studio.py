"""The session graph for LangGraph Studio (`langgraph dev`, see `langgraph.json`):
`studio_graph()` wires the same nodes and edges as `build_graph`, with the session policy
as its context schema, and returns at once: no model loads until a node needs one, and no
checkpointer is attached (the LangGraph server brings its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from langgraph.graph.state import CompiledStateGraph

from agents.planner import Planner
from engines.base import Engine
from graph.build import wire
from graph.nodes import Nodes
from graph.policy import SessionPolicy, resolve_policy
from graph.versions import ModelVersions
from storage import ArtifactStore

STUDIO_FOLDER = Path("runs") / "studio"  # of the folder `langgraph dev` runs in


class LazyEngine:
    """An engine that loads `model` on first use: drawing the graph loads nothing."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._engine: Engine | None = None

    def _loaded(self) -> Engine:
        if self._engine is None:
            from engines.factory import load_engine

            self._engine = load_engine(self._model)
        return self._engine

    def __getattr__(self, name: str) -> Any:  # only for what the instance does not have
        return getattr(self._loaded(), name)


def studio_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The session graph for Studio (the factory `langgraph.json` names: no argument),
    wired for the default policy; a run's files go under ./runs/studio."""
    return graph_for(resolve_policy(None, None, []))


def graph_for(policy: SessionPolicy) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The session graph for `policy`, its model loaded only when a node needs it."""
    from tasks import get_task

    engine = cast(Engine, LazyEngine(policy.model))
    artifacts = ArtifactStore(STUDIO_FOLDER)
    nodes = Nodes(
        ModelVersions(engine, artifacts.root),
        artifacts,
        get_task(policy.task),
        Planner.from_policy(policy, engine),
    )
    return wire(nodes).compile()
