"""The default improvement session on the default model, measured.

    python -m benchmarks.improve [--preset default] [--set key=value ...]

Runs one session (arithmetic by default) to the monitor's stop and prints: wall time;
test accuracy and hallucination rate of the initial and the final model (the initial one
answers with the same >= 96-token budget, so truncation is no handicap); every decision the
monitor made and why; and the share of wall time spent outside model compute (generation,
prefill and optimizer steps), measured by timing those calls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import transformers

from engines import load_model
from engines.hf import HFEngine
from graph.policy import resolve_policy
from graph.session import Session, new_session_id
from storage import open_store
from tasks import get_task

COMPUTE_SECONDS: dict[str, float] = {"generate": 0.0, "hidden_states": 0.0, "train": 0.0}


def timed(owner: Any, name: str, bucket: str) -> None:
    """Wrap `owner.name` so its wall time adds to COMPUTE_SECONDS[bucket]."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            COMPUTE_SECONDS[bucket] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--root", type=Path, default=Path("runs/bench-improve"))
    args = parser.parse_args()

    timed(HFEngine, "generate", "generate")
    timed(HFEngine, "hidden_states", "hidden_states")
    timed(transformers.Trainer, "train", "train")
    policy = resolve_policy(args.preset, None, args.sets)
    task = get_task(policy.task)
    started = time.perf_counter()
    engine = load_model(policy.model)
    session_id = new_session_id(task.name)
    args.root.mkdir(parents=True, exist_ok=True)
    with open_store(f"sqlite:///{args.root}/autodidact.db", args.root) as store:
        state = Session(session_id, policy, store, task, engine).run(
            on_event=lambda e: (
                print(
                    f"  [{time.perf_counter() - started:6.0f} s] c{e.cycle} {e.node}: {e.message}"
                )
                if e.kind in ("decision", "metric", "error")
                else None
            )
        )
    wall = time.perf_counter() - started
    final = state["final"]
    compute = sum(COMPUTE_SECONDS.values())
    print(f"\nsession {session_id} (preset {args.preset}, task {task.name}, model {engine.name})\n")
    print("| measure | value |\n|---|---|")
    rows = [
        ("wall time (target <= 12 min)", f"{wall / 60:.1f} min"),
        (
            "test accuracy, initial model",
            f"{final['initial']['test_accuracy']:.1%} (n={final['initial']['n_test']})",
        ),
        (
            "test accuracy, final model",
            f"{final['final']['test_accuracy']:.1%} ({final['final']['version']})",
        ),
        (
            "gain (target >= +30 points)",
            f"{(final['final']['test_accuracy'] - final['initial']['test_accuracy']) * 100:+.1f} points",
        ),
        (
            "hallucination rate, initial -> final",
            f"{final['initial']['test_hallucination_rate']:.1%} -> {final['final']['test_hallucination_rate']:.1%}",
        ),
        (
            "truncated test answers, initial -> final",
            f"{final['initial']['test_truncated']} -> {final['final']['test_truncated']}",
        ),
        (
            "model compute: generate / prefill / train",
            " / ".join(f"{COMPUTE_SECONDS[k]:.0f} s" for k in COMPUTE_SECONDS),
        ),
        (
            "share of wall time outside model compute (target <= 3%)",
            f"{(wall - compute) / wall:.1%}",
        ),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(
        "\n| cycle | version | dev acc | halluc. | mean risk | probe AUROC | decision |\n|---|---|---|---|---|---|---|"
    )
    for row in final["cycles"]:
        risk = "-" if row["mean_risk"] is None else f"{row['mean_risk']:.3f}"
        auroc = "-" if row["probe_auroc"] is None else f"{row['probe_auroc']:.3f}"
        print(
            f"| {row['cycle']} | {row['version']} | {row['accuracy']:.1%} | {row['hallucination_rate']:.1%} | {risk} | {auroc} | {row['decision'] or ''} |"
        )
    print("\nmonitor decisions:")
    for decision in final["decisions"]:
        print(f"- cycle {decision['cycle']}: {decision['action']}: {decision['reason']}")


if __name__ == "__main__":
    main()
