"""Float drift between processes: how far the same computation lands apart when only the
torch thread count or the CPU kernels differ. The cross-process tests (Ray vs one
process) take their tolerances from what this prints.

    python -m benchmarks.float_drift [--out runs/float-drift.json] [--no-session]

Each arm is a fresh process: torch threads 1 or 2 (`OMP_NUM_THREADS`, which the engine
honours) times `ATEN_CPU_CAPABILITY` unset (this CPU's own kernels) or `default` (no
vector kernels). Every arm runs
- the cluster engine test's workload on the tiny random Llama (tests/cluster/test_cluster_engine.py):
  7 prompts in batches of 2, 3 samples at T=1 (seed 11) and greedy, their log-probabilities,
  prefill states (query token, prompt mean) and a risk read from the query token;
- the one-cycle tiny session of tests/cluster/test_cluster_session.py (fixed cycles, budget rule
  off): every JSONL artifact row and v1's LoRA weights.
The first arm (2 threads, own kernels: what one process runs here) is the reference; the
table shows each arm's largest absolute difference from it, and whether the discrete
results (token ids, finish reasons, every non-float JSONL field) are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ARMS = [(2, ""), (1, ""), (2, "default"), (1, "default")]  # (threads, ATEN_CPU_CAPABILITY)
PROMPTS = [f"What is {a} + {a + 3}?" for a in range(7)]  # as tests/cluster/test_cluster_engine.py
SESSION_SETS = [
    "monitor.max_cycles=1",
    "monitor.max_wall_minutes=10000",
    "monitor.project_wall_budget=false",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the measured differences here (JSON)")
    parser.add_argument("--no-session", action="store_true", help="the engine workload only")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # an arm's output file
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one arm (a process)


def engine_workload(folder: Path) -> dict[str, Any]:
    """The cluster engine test's generations and states, as plain lists."""
    from engines.base import SamplingParams
    from engines.hf import HFEngine

    engine = HFEngine.load(str(folder), batch_size=2)
    sampled = engine.generate(
        PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=11)
    )
    greedy = engine.generate(
        PROMPTS,
        SamplingParams(max_new_tokens=5),
        risk_fn=lambda states: float(states.query_token[-1].sum()),
    )
    states = [g.states for g in sampled + greedy if g.states is not None]
    return {
        "token_ids": [[s.token_ids for s in g.samples] for g in sampled + greedy],
        "finish_reasons": [[s.finish_reason for s in g.samples] for g in sampled + greedy],
        "logprobs": [s.logprobs for g in sampled + greedy for s in g.samples],
        "query_token": [s.query_token.tolist() for s in states],
        "prompt_mean": [s.prompt_mean.tolist() for s in states],
        "risk": [g.risk for g in greedy],
    }


def session_workload(root: Path) -> dict[str, Any]:
    """The one-cycle tiny session, run by the tests' session worker in this process's
    environment: its JSONL rows by file and v1's LoRA weights."""
    from safetensors.torch import load_file

    from storage.layout import SessionLayout

    worker = Path(__file__).resolve().parents[1] / "tests" / "session_worker.py"
    command = [sys.executable, str(worker), "--store", f"sqlite:///{root}/autodidact.db"]
    command += ["--root", str(root), "--session", "drift"]
    command += [arg for value in SESSION_SETS for arg in ("--set", value)]
    subprocess.run(command, check=True, capture_output=True)
    layout = SessionLayout.of(root, "drift")
    rows = {
        path.relative_to(layout.folder).as_posix(): [json.loads(line) for line in path.open()]
        for path in sorted(layout.folder.glob("**/*.jsonl"))
    }
    adapter = load_file(layout.adapter("v1") / "adapter_model.safetensors")
    return {"rows": rows, "lora": [x for v in adapter.values() for x in v.flatten().tolist()]}


def run_arm(out: Path, session: bool) -> None:
    from tests.cluster_support import save_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        result = {"engine": engine_workload(save_tiny_model(Path(scratch) / "model"))}
        if session:
            result["session"] = session_workload(Path(scratch) / "session")
    out.write_text(json.dumps(result))


# ---------------------------------------------------------------- comparing arms


def floats_and_rest(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) for every leaf of a JSON value; floats keep their path's last key.

    >>> list(floats_and_rest({"a": [1.5, "x"], "b": 2}))
    [('a', 1.5), ('a', 'x'), ('b', 2)]
    """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from floats_and_rest(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from floats_and_rest(item, path)
    else:
        yield path, value


def compare(reference: Any, other: Any) -> tuple[bool, dict[str, float]]:
    """(are the non-float leaves equal, largest absolute difference per float field).

    >>> compare({"p": [1.0, 2.0], "n": "a"}, {"p": [1.0, 2.5], "n": "a"})
    (True, {'p': 0.5})
    >>> compare({"n": "a"}, {"n": "b"})[0]
    False
    """
    mine, theirs = list(floats_and_rest(reference)), list(floats_and_rest(other))
    if [p for p, _ in mine] != [p for p, _ in theirs]:
        return False, {}
    same, worst = True, dict[str, float]()
    for (field, a), (_, b) in zip(mine, theirs, strict=True):
        if isinstance(a, float) or isinstance(b, float):
            worst[field] = max(worst.get(field, 0.0), abs(float(a) - float(b)))
        elif a != b:
            same = False
    return same, worst


def arm_name(threads: int, capability: str) -> str:
    return f"{threads} thread{'s' * (threads > 1)}, {capability or 'own'} kernels"


def measure(session: bool) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for threads, capability in ARMS:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            env.pop("ATEN_CPU_CAPABILITY", None)
            if capability:
                env["ATEN_CPU_CAPABILITY"] = capability
            out = Path(scratch) / f"arm-{threads}-{capability or 'own'}.json"
            command = [sys.executable, "-m", "benchmarks.float_drift", "--child", str(out)]
            subprocess.run(command + ["--no-session"] * (not session), check=True, env=env)
            results[arm_name(threads, capability)] = json.loads(out.read_text())
            print(f"measured: {arm_name(threads, capability)}", flush=True)
    return results


def report(results: dict[str, Any]) -> dict[str, Any]:
    """Print, per workload and arm, discrete equality and the largest float differences."""
    reference_name, *others = results
    reference = results[reference_name]
    table: dict[str, Any] = {}
    for workload in reference:
        print(f"\n{workload}: largest absolute difference from '{reference_name}'\n")
        for name in others:
            same, worst = compare(reference[workload], results[name][workload])
            table.setdefault(workload, {})[name] = {"discrete_equal": same, "max_abs": worst}
            cells = ", ".join(f"{field} {value:.2e}" for field, value in sorted(worst.items()))
            print(f"- {name}: discrete {'equal' if same else 'DIFFER'}; {cells}")
    return table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_arm(args.child, session=not args.no_session)
        return
    table = report(measure(session=not args.no_session))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
