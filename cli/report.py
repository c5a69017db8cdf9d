"""`autodidact report SESSION`: rebuild a session's self-contained `report.html` from its
store (events) and its folder (artifacts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.common import DEFAULT_ROOT, RootOption, StoreOption, cli_command, console, fail
from cli.session import open_existing_store, where_flags


def report(
    session_id: Annotated[str, typer.Argument(help="The session to report on.")],
    store: StoreOption = None,
    root: RootOption = DEFAULT_ROOT,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the page here instead (default: report.html in the session's folder, "
            "listed in the session's manifest).",
        ),
    ] = None,
) -> None:
    """Rebuild a session's report.html: metrics per cycle, per-layer probe AUROC, risk of
    right vs wrong answers, every decision with its reason and evidence, the stop reason,
    and the samples table with filters. One file, opens from disk, no network."""
    from storage.layout import SessionLayout
    from views.report_html import render_session_report, write_session_report

    with open_existing_store(store, root) as opened:
        if opened.events.get_session(session_id) is None:
            known = ", ".join(s.session_id for s in opened.events.list_sessions()) or "none"
            flags = where_flags(store, root, opened.display_url)
            raise fail(
                f"no session {session_id!r} in {opened.display_url}; sessions there: {known} "
                f"(`autodidact sessions{flags}`)"
            )
        if out is None:
            path = write_session_report(opened, session_id)
        else:
            write_atomically(out, render_session_report(opened, session_id))
            path = out
    console.print(f"{SessionLayout.REPORT_HTML}: {path}", highlight=False, soft_wrap=True)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def register(app: typer.Typer) -> None:
    app.command("report")(cli_command(report))
