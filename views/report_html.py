"""`report.html`: one self-contained page per session (inline CSS, JS and SVG; it opens
from disk with no server and makes no network request), rendered from a `SessionReport`
with the jinja2 template beside this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage import ArtifactStore, Store
from storage.layout import SessionLayout
from views import report_charts
from views.report_data import ProbeSweep, SessionReport, collect_report

TEMPLATES = Path(__file__).parent / "templates"


def write_session_report(store: Store, session_id: str) -> Path:
    """Write `report.html` into the session's folder (listed in its manifest), rebuilt
    from what `store` and that folder hold; returns its path."""
    artifacts = ArtifactStore(SessionLayout.of(store.root, session_id).folder)
    page = render_session_report(store, session_id)
    artifacts.write_bytes(SessionLayout.REPORT_HTML, page.encode(), kind="report")
    return artifacts.path(SessionLayout.REPORT_HTML)


def render_session_report(store: Store, session_id: str) -> str:
    """The page of `session_id`, from its events in `store` and its artifacts."""
    report = collect_report(
        session_id,
        store.events.get_session(session_id),
        store.events.read(session_id),
        SessionLayout.of(store.root, session_id).folder,
    )
    return render_report(report)


def render_report(report: SessionReport) -> str:
    """The page, as one HTML string."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.globals.update(pct=pct, num=num, value=value, chosen=chosen)
    cycles = report.cycles
    charts = []
    if cycles:
        charts = [
            report_charts.cycle_chart(cycles, report_charts.CYCLE_RATES, "share of dev items"),
            report_charts.cycle_chart(
                cycles, report_charts.CYCLE_AUROCS, "AUROC on fresh dev labels"
            ),
        ]
    rows = table_rows(report)
    return environment.get_template("report.html").render(
        r=report,
        cycle_charts=charts,
        sweep_charts=[(s, report_charts.sweep_chart(s)) for s in report.probes],
        histograms=report_charts.risk_histograms(report.dev_answers),
        rows=rows,
        sample_cycles=sorted({row["cycle"] for row in rows}),
    )


def table_rows(report: SessionReport) -> list[dict[str, Any]]:
    """The samples table: training samples, then dev answers, each with a verdict.

    >>> r = SessionReport("s", "finished", samples=[{"cycle": 1, "item_id": "a", "prompt": "q",
    ...     "text": "t", "risk": 0.9, "correct": False, "selected": False}])
    >>> [(row["source"], row["verdict"], row["verdict_key"]) for row in table_rows(r)]
    [('sample', 'wrong', 'wrong')]
    """
    rows = [
        {"source": "sample", "version": None, **s} | verdict(s["correct"]) for s in report.samples
    ]
    for answer in report.dev_answers:
        judged = "abstained" if answer.get("abstained") else answer["correct"]
        rows.append(
            {"source": "dev", "item_id": answer["id"], "text": answer["output"], **answer}
            | {"selected": False}
            | verdict(judged)
        )
    return rows


def verdict(correct: bool | str | None) -> dict[str, str]:
    """The verdict's label and its filter key (`wrong` is what the wrong-only filter keeps).

    >>> verdict(True)["verdict"], verdict(None)["verdict"], verdict("abstained")["verdict_key"]
    ('right', 'not labelled', 'abstained')
    """
    if isinstance(correct, str):
        return {"verdict": correct, "verdict_key": correct}
    label = "not labelled" if correct is None else "right" if correct else "wrong"
    return {"verdict": label, "verdict_key": label}


def pct(x: float | None) -> str:
    """
    >>> pct(0.1234), pct(None)
    ('12.3%', '-')
    """
    return "-" if x is None else f"{x:.1%}"


def num(x: float | None) -> str:
    """
    >>> num(0.12345), num(None)
    ('0.123', '-')
    """
    return "-" if x is None else f"{x:.3f}"


def value(v: Any) -> str:
    """An evidence value: whole numbers as integers, others to 3 places.

    >>> value(2.0), value(0.12345), value("v1"), value(True)
    ('2', '0.123', 'v1', 'True')
    """
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.3f}"
    return str(v)


def chosen(sweep: ProbeSweep) -> str:
    """The chosen candidate of a sweep and its score.

    >>> chosen(ProbeSweep("p", "AUROC", [{"feature": "layer.1.query_token", "val_auroc": 0.7,
    ...     "chosen": True}]))
    'layer.1.query_token (AUROC 0.700)'
    """
    row = next((r for r in sweep.rows if r.get("chosen")), None)
    if row is None:
        return "-"
    return f"{row['feature']} ({sweep.metric} {num(row['val_auroc'])})"
