"""The charts of a session's `report.html`, drawn with matplotlib as inline SVG: text
stays text, and nothing in them points outside the page (no XML prolog, no namespace or
metadata URLs)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from views.report_data import ProbeSweep

CYCLE_RATES = (
    ("accuracy", "dev accuracy"),
    ("hallucination_rate", "hallucination rate"),
    ("abstention_rate", "abstention rate"),
    ("predicted_accuracy", "probe's forecast (1 - mean risk)"),
)
CYCLE_AUROCS = (
    ("probe_auroc", "probe (fresh)"),
    ("stale_probe_auroc", "last cycle's probe"),
    ("logprob_auroc", "mean token logprob"),
    ("entropy_auroc", "mean token entropy"),
)


def inline_svg(figure: Any) -> str:
    """`figure` as an `<svg>` element to paste into HTML: the XML prolog, DOCTYPE,
    metadata and namespace declarations (URLs an HTML page does not need) removed."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "autodidact"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return strip_svg(buffer.getvalue())


def strip_svg(svg: str) -> str:
    """
    >>> strip_svg('<?xml version="1.0"?>\\n<!DOCTYPE svg PUBLIC "x" "http://a">\\n'
    ...           '<svg xmlns:xlink="http://b" xmlns="http://c"><metadata>http://d</metadata>'
    ...           '<g/></svg>')
    '<svg><g/></svg>'
    """
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)


def _figure(width: float = 7.0, height: float = 3.4) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def cycle_chart(
    cycles: Sequence[dict[str, Any]], series: Sequence[tuple[str, str]], ylabel: str
) -> str:
    """One line per metric in `series` over the evaluated versions (x: cycle and version)."""
    figure = _figure()
    axes = figure.subplots()
    ticks = [f"c{row['cycle']} {row['version']}" for row in cycles]
    for key, label in series:
        points = [(i, row.get(key)) for i, row in enumerate(cycles) if row.get(key) is not None]
        if points:
            axes.plot([i for i, _ in points], [v for _, v in points], marker="o", label=label)
    axes.set_xticks(range(len(ticks)), ticks)
    axes.set(ylim=(0, 1.02), ylabel=ylabel, xlabel="cycle and version")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    return inline_svg(figure)


def sweep_chart(sweep: ProbeSweep) -> str:
    """Validation score per layer, one line per feature kind; the chosen candidate starred."""
    figure = _figure()
    axes = figure.subplots()
    single = [row for row in sweep.rows if len(row["layers"]) == 1 and row["val_auroc"] is not None]
    for kind in sorted({row["kind"] for row in single}):
        rows = sorted((r for r in single if r["kind"] == kind), key=lambda r: r["layers"][0])
        axes.plot(
            [r["layers"][0] for r in rows], [r["val_auroc"] for r in rows], marker=".", label=kind
        )
    for row in sweep.rows:
        if row.get("chosen") and row["val_auroc"] is not None:
            axes.plot(row["layers"][-1], row["val_auroc"], marker="*", markersize=14, color="black",
                      linestyle="none", label=f"chosen: {row['feature']} ({row['val_auroc']:.3f})")  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.axhline(0.5, color="grey", linewidth=0.8)
    axes.set(xlabel="layer (0 = embeddings)", ylabel=f"validation {sweep.metric}")
    axes.set_title(sweep.name, fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    return inline_svg(figure)


def risk_histograms(answers: Sequence[dict[str, Any]]) -> str | None:
    """Per evaluated version, the probe's risk on its right and on its wrong dev answers
    (abstentions left out); None when no answer carries a risk."""
    versions = list(dict.fromkeys(
        (a["cycle"], a["version"]) for a in answers if a.get("risk") is not None
    ))  # fmt: skip
    if not versions:
        return None
    figure = _figure(width=min(3.0 * len(versions), 12.0), height=2.8)
    axes = figure.subplots(1, len(versions), squeeze=False, sharey=True)[0]
    bins = [i / 10 for i in range(11)]
    for ax, (cycle, version) in zip(axes, versions, strict=True):
        scored = [
            a for a in answers
            if (a["cycle"], a["version"]) == (cycle, version) and a.get("risk") is not None
            and not a.get("abstained")
        ]  # fmt: skip
        right = [a["risk"] for a in scored if a["correct"]]
        wrong = [a["risk"] for a in scored if not a["correct"]]
        ax.hist([right, wrong], bins=bins, label=["right", "wrong"], color=["#2a9d8f", "#e76f51"])
        ax.set(title=f"c{cycle} {version}", xlabel="probe risk", xlim=(0, 1))
    axes[0].set_ylabel("dev answers")
    axes[0].legend(fontsize=8)
    return inline_svg(figure)
