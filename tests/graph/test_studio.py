"""LangGraph Studio: `langgraph.json` names a factory whose graph is the session graph
(same nodes, same edges, the policy as context schema), built without loading a model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from graph.build import build_graph
from graph.policy import SessionPolicy, resolve_policy
from storage import ArtifactStore, open_store
from tasks import get_task
from tests.tiny_models import tiny_engine

REPO = Path(__file__).resolve().parents[2]


def structure(compiled: Any) -> tuple[set[str], set[tuple[str, str, bool]]]:
    drawn = compiled.get_graph()
    return set(drawn.nodes), {(e.source, e.target, bool(e.conditional)) for e in drawn.edges}


def studio_factory() -> Any:
    """The factory `langgraph.json` points to, loaded from its file as `langgraph dev` does."""
    config = json.loads((REPO / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    path, _, name = config["graphs"]["autodidact"].partition(":")
    spec = importlib.util.spec_from_file_location("studio_entry", REPO / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_the_studio_graph_has_the_session_graphs_nodes_and_edges(tmp_path: Path) -> None:
    policy = resolve_policy(None, None, [])
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        session_graph = build_graph(
            policy,
            tiny_engine(),
            store,
            task=get_task(policy.task),
            artifacts=ArtifactStore(tmp_path / "s"),
        )
    studio = studio_factory()()
    nodes, edges = structure(studio)
    assert (nodes, edges) == structure(session_graph)
    assert {"fit_probe_on_answers", "acquire", "select", "refit_probe_on_samples"} <= nodes
    assert {"optimize", "evaluate", "monitor"} <= nodes
    assert ("monitor", "finalize", True) in edges, "the monitor's routes come through"
    assert studio.context_schema is SessionPolicy, "Studio's context form is the policy"
    assert studio.checkpointer is None, "the LangGraph server brings its own persistence"


def test_building_the_studio_graph_loads_no_model() -> None:
    """In a fresh interpreter: the factory returns without importing torch, so without
    loading any model."""
    code = (
        "import sys; from graph.studio import studio_graph; studio_graph(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
