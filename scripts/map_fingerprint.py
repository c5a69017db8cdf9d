"""Compare a session fingerprint written before the probe nodes were renamed with one
written after (both by scripts/session_fingerprint.py): each old node name is mapped to
its new one (`storage.records.RENAMED_NODES`, read the way the event log reads an older
event: node and key) and so is the default message a node's start or end carries
("probe started"); every other value must be equal, and so must every weight hash.

    python scripts/map_fingerprint.py before.json after.json

Prints what differs, if anything; exit 1 then.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# run as a script, its own folder comes first on sys.path: put the repository there too
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from storage.records import RENAMED_NODES, Event  # noqa: E402


def renamed(event: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint's event from before the rename, its node names as they are now.

    >>> renamed({"key": "c0/probe/0", "kind": "node_start", "node": "probe", "cycle": 0,
    ...          "message": "probe started", "data": {}})["message"]
    'fit_probe_on_answers started'
    """
    read = Event.model_validate({**event, "schema_version": 2, "session_id": "s", "ts": 0.0})
    message = event["message"]
    old = event["node"]
    if old in RENAMED_NODES and message in (f"{old} started", f"{old} done"):
        message = message.replace(old, RENAMED_NODES[old], 1)
    return {**event, "node": read.node, "key": read.key, "message": message}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between the mapped `before` and `after`, one line each."""
    lines = []
    old, new = [renamed(e) for e in before["events"]], after["events"]
    if len(old) != len(new):
        lines.append(f"{len(old)} events before, {len(new)} after")
    for n, (a, b) in enumerate(zip(old, new, strict=False)):
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                lines.append(
                    f"event {n} ({b.get('key')}): {field} {a.get(field)!r} != {b.get(field)!r}"
                )
    if before["hashes"] != after["hashes"]:
        lines.append(f"weight hashes differ: {before['hashes']} != {after['hashes']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="fingerprint from before the rename")
    parser.add_argument("after", type=Path, help="fingerprint from after it")
    args = parser.parse_args()
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    lines = differences(before, after)
    for line in lines:
        print(line)
    mapped = sum(e["node"] in RENAMED_NODES for e in before["events"])
    print(
        f"{len(after['events'])} events ({mapped} with a renamed node), "
        f"{len(after['hashes'])} weight hashes: " + ("differ" if lines else "equal after mapping")
    )
    sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
