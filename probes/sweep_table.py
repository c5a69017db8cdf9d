"""`sweep.json` beside a fitted probe: every candidate its fit compared (feature, kind,
layers, validation score, chosen or not), so a session's report can plot the score per
layer. Plain JSON, readable without the probes stack (no numpy, no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SWEEP_FILE = "sweep.json"


def save_sweep_table(folder: str | Path, metric: str, rows: list[dict[str, Any]]) -> Path:
    """Write `sweep.json` into the probe's folder atomically (a dot-named temp renamed into
    place); `metric` names what each row's `val_auroc` holds."""
    path = Path(folder) / SWEEP_FILE
    tmp = path.parent / f".{SWEEP_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"metric": metric, "rows": rows}, indent=1, default=float))
    os.replace(tmp, path)
    return path


def load_sweep_table(folder: str | Path) -> dict[str, Any] | None:
    """`sweep.json` of a probe folder (None for a probe saved without one).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = save_sweep_table(folder, "AUROC", [{"feature": "layer.1.query_token"}])
    ...     load_sweep_table(folder)["rows"][0]["feature"], load_sweep_table(folder + "/x")
    ('layer.1.query_token', None)
    """
    path = Path(folder) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None
