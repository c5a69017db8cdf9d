"""The README's fault-injection figure: kills injected and sessions resumed identical, per
backend, then one row per kill point, from the JSON lines tests/sessions/test_fault_sweep.py
appends to AUTODIDACT_FAULT_SWEEP_OUT (one per attempt; a sweep run again appends, and
every attempt is counted, so a kill point that fails only sometimes shows as flaky).

    AUTODIDACT_FAULT_SWEEP_OUT=sweep.jsonl bash scripts/with-redis.sh \\
        .venv/bin/python -m pytest tests/sessions/test_fault_sweep.py -m ""
    python scripts/fault_sweep_figure.py sweep.jsonl [--out figure.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BACKEND_NAMES = {"sqlite": "SQLite", "redis": "Redis", "sqlite-grpo": "SQLite, GRPO optimize"}


def figure(lines: list[dict[str, Any]]) -> str:
    """Markdown: the totals per backend, then each kill point's result on each backend.
    Every attempt counts: a kill point run again shows each of its results, so one that
    resumed identical only some of the times shows as flaky.

    >>> print(figure([
    ...     {"backend": "sqlite", "kill": "node.fit_probe_on_answers:1", "point": "node.fit_probe_on_answers:1",
    ...      "where": "in fit_probe_on_answers", "identical": True},
    ...     {"backend": "redis", "kill": "node.fit_probe_on_answers:1", "point": "node.fit_probe_on_answers:1",
    ...      "where": "in fit_probe_on_answers", "identical": False},
    ...     {"backend": "redis", "kill": "node.fit_probe_on_answers:1", "point": "node.fit_probe_on_answers:1",
    ...      "where": "in fit_probe_on_answers", "identical": True},
    ... ]))
    | backend | kills injected | resumed identical | flaky kill points |
    |---|---:|---:|---:|
    | SQLite | 1 | 1 | 0 |
    | Redis | 2 | 1 | 1 |
    <BLANKLINE>
    | kill point | where | SQLite | Redis |
    |---|---|---|---|
    | `node.fit_probe_on_answers:1` | in fit_probe_on_answers | yes | **flaky**: 1 of 2 identical |
    """
    backends = sorted({line["backend"] for line in lines}, key=list(BACKEND_NAMES).index)
    attempts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in lines:
        attempts.setdefault(line["kill"], {}).setdefault(line["backend"], []).append(line)
    rows = [
        "| backend | kills injected | resumed identical | flaky kill points |",
        "|---|---:|---:|---:|",
    ]
    for backend in backends:
        runs = [line for line in lines if line["backend"] == backend]
        identical = sum(line["identical"] for line in runs)
        flaky = sum(verdict(kill.get(backend, [])) == "flaky" for kill in attempts.values())
        rows.append(f"| {BACKEND_NAMES[backend]} | {len(runs)} | {identical} | {flaky} |")
    names = " | ".join(BACKEND_NAMES[b] for b in backends)
    rows += ["", f"| kill point | where | {names} |", "|---|---|" + "---|" * len(backends)]
    for kill, results in attempts.items():
        first = next(iter(results.values()))[0]
        drawn = kill != first["point"]  # a seeded random moment
        cells = [cell(results.get(b, []), drawn) for b in backends]
        where = "a seeded random moment" if drawn else first["where"]
        rows.append(f"| `{kill}` | {where} | {' | '.join(cells)} |")
    return "\n".join(rows)


def verdict(attempts: list[dict[str, Any]]) -> str:
    """'yes' (every attempt resumed identical), 'no' (none did), 'flaky' (some), or
    'not run'.

    >>> verdict([{"identical": True}, {"identical": False}])
    'flaky'
    """
    if not attempts:
        return "not run"
    identical = sum(line["identical"] for line in attempts)
    return "yes" if identical == len(attempts) else "no" if identical == 0 else "flaky"


def cell(attempts: list[dict[str, Any]], drawn: bool) -> str:
    """One kill point's attempts on one backend; a random moment names where it fell.

    >>> cell([{"identical": True, "point": "a:1", "where": "in fit_probe_on_answers"}] * 2, drawn=True)
    'yes (2 of 2): `a:1` (in probe)'
    >>> cell([{"identical": False}], drawn=False)
    '**no**'
    """
    result = verdict(attempts)
    if result == "not run":
        return result
    identical = sum(line["identical"] for line in attempts)
    text = {"yes": "yes", "no": "**no**", "flaky": "**flaky**"}[result]
    if result == "flaky":
        text += f": {identical} of {len(attempts)} identical"
    elif len(attempts) > 1:
        text += f" ({identical} of {len(attempts)})"
    if drawn:
        points = dict.fromkeys((line["point"], line["where"]) for line in attempts)
        text += ": " + ", ".join(f"`{point}` ({where})" for point, where in points)
    return text


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
