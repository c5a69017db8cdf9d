"""Tracking benchmark: MLflow tracking's share of a session's wall time.

    python -m benchmarks.tracking [--model tiny|default] [--root DIR] [--store-ready]

Runs one session with its MLflow tracker (the CLI's consumer) and times the tracker:
opening the run (importing mlflow; on a fresh store, creating its database), and the
time spent inside the consumer (metrics, tags, tables and one trace written per cycle).
`--model tiny`: the tests' random 2-layer Llama with their tiny policy (two cycles);
`--model default`: the `quick` preset on the default model (a few minutes).
`--store-ready` first creates the tracking database (not timed), as a second session on
the same `--root` finds it. Importing mlflow is counted either way: when this process has
already imported it (the store's creation did), the seconds a new process pays for the
import, after the session's own imports, are timed in a fresh interpreter and added to the
opening and to the wall time. Prints a markdown table. `--root` keeps the store (open it
with `autodidact ui --root DIR`); the default is a temporary folder, deleted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graph.policy import resolve_policy
from graph.session import Session, new_session_id
from storage import open_store
from storage.mlflow_store import default_artifact_root, default_tracking_uri, open_run
from views.mlflow_logging import tracked


def tiny_session_parts() -> tuple[Any, Any, Any, Any]:
    from engines.hf import HFEngine
    from tests.session_support import coin_flip_task, tiny_policy
    from tests.tiny_models import tiny_engine

    return tiny_policy(), coin_flip_task(), tiny_engine(), lambda p: HFEngine.load(str(p))


def default_session_parts() -> tuple[Any, Any, Any, Any]:
    from engines import load_model
    from engines.hf import HFEngine
    from tasks import get_task

    policy = resolve_policy("quick")
    return policy, get_task(policy.task), load_model(policy.model), lambda p: HFEngine.load(str(p))


# what a new session process has imported when its tracking opens, then the import timed
FRESH_IMPORT = (
    "import time\n"
    "import engines.hf, graph.session, views.mlflow_logging, tasks\n"
    "from storage.mlflow_store import mlflow_module\n"
    "started = time.perf_counter()\n"
    "mlflow_module()\n"
    "print(time.perf_counter() - started)\n"
)


def fresh_import_seconds() -> float:
    """Seconds a new session process pays to import mlflow, timed in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


def with_import(measured: dict[str, float], import_seconds: float) -> dict[str, float]:
    """The opening and the wall time with mlflow's import added (timed elsewhere, when
    this process had imported it before its timer started).

    >>> with_import({"wall": 10.0, "open": 0.5, "consumer": 1.0, "close": 0.5}, 4.0)
    {'wall': 14.0, 'open': 4.5, 'consumer': 1.0, 'close': 0.5, 'import': 4.0}
    """
    return measured | {
        "wall": measured["wall"] + import_seconds,
        "open": measured["open"] + import_seconds,
        "import": import_seconds,
    }


def measure(model: str, root: Path, store_ready: bool) -> dict[str, float]:
    policy, task, engine, load_engine = (
        tiny_session_parts() if model == "tiny" else default_session_parts()
    )
    uri = default_tracking_uri(root)
    if store_ready:
        open_run(uri, "autodidact/warm-up", "warm-up", default_artifact_root(root))
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        session_id = new_session_id(task.name)
        session = Session(session_id, policy, store, task, engine, load_engine=load_engine)
        imported_before = "mlflow" in sys.modules
        started = time.perf_counter()
        opening = time.perf_counter()
        with tracked(session, uri, default_artifact_root(root), resume=False) as tracker:
            opened = time.perf_counter() - opening
            consumer_before = tracker.seconds
            session.run(on_event=tracker)
            closing = time.perf_counter()
        closed = time.perf_counter() - closing
        wall = time.perf_counter() - started
    if tracker.error is not None:
        raise SystemExit(f"tracking failed: {tracker.error}")
    consumer = tracker.seconds - consumer_before
    measured = {"wall": wall, "open": opened, "consumer": consumer, "close": closed}
    if imported_before:
        return with_import(measured, fresh_import_seconds())
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "default"), default="tiny")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--store-ready", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        m = measure(args.model, root, args.store_ready)
    session_only = m["wall"] - m["open"] - m["consumer"] - m["close"]
    print(
        f"| measure ({args.model} model, store {'ready' if args.store_ready else 'fresh'}) | value |"
    )
    print("|---|---|")
    print(f"| session wall time, tracking included | {m['wall']:.1f} s |")
    imported = f"; import {m['import']:.1f} s, timed in a fresh process" if "import" in m else ""
    print(f"| opening the run (import mlflow, store set-up) | {m['open']:.1f} s{imported} |")
    print(f"| in the consumer during the session (per-cycle writes) | {m['consumer']:.2f} s |")
    print(f"| closing (pending cycle, report, plots) | {m['close']:.2f} s |")
    print(f"| session without tracking (wall - the above) | {session_only:.1f} s |")
    share = (m["consumer"] + m["close"]) / m["wall"]
    print(f"| tracking share of wall, writes only | {share:.2%} |")
    print(f"| tracking share of wall, opening included | {share + m['open'] / m['wall']:.2%} |")


if __name__ == "__main__":
    main()
