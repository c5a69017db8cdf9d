"""The README's fault-injection figure: kills injected and sessions resumed identical, per
backend, then one row per kill point, from the JSON lines tests/test_fault_sweep.py
appends to AUTODIDACT_FAULT_SWEEP_OUT.

    AUTODIDACT_FAULT_SWEEP_OUT=sweep.jsonl bash scripts/with-redis.sh \\
        .venv/bin/python -m pytest tests/test_fault_sweep.py -m ""
    python scripts/fault_sweep_figure.py sweep.jsonl [--out figure.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BACKEND_NAMES = {"sqlite": "SQLite", "redis": "Redis"}


def figure(lines: list[dict[str, Any]]) -> str:
    """Markdown: the totals per backend, then each kill point's result on each backend
    (a kill run again counts once, with its latest result).

    >>> print(figure([
    ...     {"backend": "sqlite", "kill": "node.probe:1", "point": "node.probe:1",
    ...      "where": "in probe", "identical": True},
    ...     {"backend": "redis", "kill": "node.probe:1", "point": "node.probe:1",
    ...      "where": "in probe", "identical": False},
    ... ]))
    | backend | kills injected | resumed identical |
    |---|---:|---:|
    | SQLite | 1 | 1 |
    | Redis | 1 | 0 |
    <BLANKLINE>
    | kill point | where | SQLite | Redis |
    |---|---|---|---|
    | `node.probe:1` | in probe | yes | **no** |
    """
    lines = list({(line["backend"], line["kill"]): line for line in lines}.values())
    backends = sorted({line["backend"] for line in lines}, key=list(BACKEND_NAMES).index)
    rows = ["| backend | kills injected | resumed identical |", "|---|---:|---:|"]
    for backend in backends:
        runs = [line for line in lines if line["backend"] == backend]
        identical = sum(line["identical"] for line in runs)
        rows.append(f"| {BACKEND_NAMES[backend]} | {len(runs)} | {identical} |")
    names = " | ".join(BACKEND_NAMES[b] for b in backends)
    rows += ["", f"| kill point | where | {names} |", "|---|---|" + "---|" * len(backends)]
    by_kill: dict[str, dict[str, dict[str, Any]]] = {}
    for line in lines:
        by_kill.setdefault(line["kill"], {})[line["backend"]] = line
    for kill, results in by_kill.items():
        drawn = kill != next(iter(results.values()))["point"]  # a seeded random moment
        cells = [cell(results.get(b), drawn) for b in backends]
        where = "a seeded random moment" if drawn else next(iter(results.values()))["where"]
        rows.append(f"| `{kill}` | {where} | {' | '.join(cells)} |")
    return "\n".join(rows)


def cell(line: dict[str, Any] | None, drawn: bool) -> str:
    if line is None:
        return "not run"
    verdict = "yes" if line["identical"] else "**no**"
    return f"{verdict}: `{line['point']}` ({line['where']})" if drawn else verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the JSON lines the sweep wrote")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    args = parser.parse_args()
    text = args.results.read_text().splitlines()
    table = figure([json.loads(line) for line in text if line.strip()])
    if args.out:
        args.out.write_text(table + "\n")
    else:
        print(table)


if __name__ == "__main__":
    main()
