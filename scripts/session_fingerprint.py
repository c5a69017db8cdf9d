"""Fingerprint of a finished session, free of wall times and ids: every logged event's
kind, node, cycle, message and data (decisions with their evidence and verdicts), plus the
sha256 of each model version's adapter and weight files. Two runs of the same policy (the
wall-clock budget rule off, a fixed number of cycles) must print the same fingerprint;
this is how a refactor shows it changed no behaviour.

    python scripts/session_fingerprint.py --root runs/eq-before --out before.json -- \
        --preset quick --set monitor.project_wall_budget=false --set monitor.max_wall_minutes=10000

Everything after `--` goes to `autodidact run`; the session runs in --root (a fresh folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# run as a script, its own folder comes first on sys.path: put the repository there too
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from storage.layout import SessionLayout  # noqa: E402

# wall-clock readings: they differ between any two runs of the same session
WALL_KEYS = frozenset(
    {
        "seconds",
        "eval_seconds",
        "train_seconds",
        "wall_seconds",
        "scoring_seconds",
        "sampling_seconds",
        "ts",
        "elapsed_minutes",
        "last_cycle_minutes",
        "finalize_minutes",
        "minutes_left",
        "samples_per_second",
    }
)


def strip_wall_times(value: Any) -> Any:
    """The value with every wall-clock key removed, recursively.

    >>> strip_wall_times({"a": 1, "seconds": 2.0, "b": [{"ts": 3, "c": 4}]})
    {'a': 1, 'b': [{'c': 4}]}
    """
    if isinstance(value, dict):
        return {k: strip_wall_times(v) for k, v in value.items() if k not in WALL_KEYS}
    if isinstance(value, list):
        return [strip_wall_times(v) for v in value]
    return value


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every weight and adapter file under the session's versions folder."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(SessionLayout(folder).versions.glob("**/*.safetensors"))
    }


def autodidact() -> list[str]:
    """The CLI of the code on sys.path (the `cli` package, or `graph.cli` before it)."""
    repo = Path(__file__).resolve().parents[1]
    module = "cli.app" if (repo / "cli").is_dir() else "graph.cli"
    return [sys.executable, "-c", f"from {module} import main; main()"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="fresh folder for the session")
    parser.add_argument("--out", type=Path, required=True, help="fingerprint JSON to write")
    parser.add_argument("--session-id", default="fingerprint")
    parser.add_argument(
        "--no-run", action="store_true", help="fingerprint a session already in --root"
    )
    parser.add_argument("run_args", nargs="*", help="arguments of `autodidact run`")
    args = parser.parse_args()
    exe = autodidact()
    where = ["--root", str(args.root), "--session-id", args.session_id]
    if not args.no_run:
        subprocess.run([*exe, "run", *args.run_args, *where], check=True)
    trace = subprocess.run(
        [*exe, "trace", args.session_id, "--json", "--root", str(args.root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    events = [json.loads(line) for line in trace.splitlines() if line.strip()]
    fingerprint = {
        "events": [
            strip_wall_times({k: e[k] for k in ("key", "kind", "node", "cycle", "message", "data")})
            for e in events
        ],
        "hashes": file_hashes(SessionLayout.of(args.root, args.session_id).folder),
    }
    args.out.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    print(
        f"{len(fingerprint['events'])} events, {len(fingerprint['hashes'])} weight files -> {args.out}"
    )


if __name__ == "__main__":
    main()
