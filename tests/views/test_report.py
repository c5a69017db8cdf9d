"""`report.html`: written once a tiny session finished, rebuilt by `autodidact report`;
self-contained (no URL outside the page), with every cycle, decision, the stop reason and
the samples selected for training."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import make_app
from storage import open_store
from tests.browser_support import chromium_or_skip, screenshot_folder
from tests.session_support import coin_flip_task, tiny_policy

runner = CliRunner()
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)|(?:https?://)""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A two-cycle tiny session, run to its stop: (root, final state)."""
    from engines.hf import HFEngine
    from graph.session import Session
    from tests.tiny_models import tiny_engine
    from views.report_html import write_session_report

    root = tmp_path_factory.mktemp("report")
    with open_store(f"sqlite:///{root}/autodidact.db", root) as store:
        session = Session(
            "s1",
            tiny_policy(),
            store,
            coin_flip_task(),
            tiny_engine(),
            load_engine=lambda p: HFEngine.load(str(p)),
        )
        state = session.run()
        write_session_report(store, "s1")  # what `autodidact run` does once a session finished
    return root, dict(state)


def page_text(path: Path) -> str:
    return html.unescape(path.read_text())


def test_the_session_writes_a_report_with_every_cycle_decision_and_the_stop(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    root, state = finished
    path = root / "sessions/s1/report.html"
    assert path.is_file(), "a finished session writes report.html into its folder"
    page = path.read_text()
    text = page_text(path)
    rows = re.findall(r'<tr class="cycle-row"><td class="n">(\d+)</td><td>(v\d+)</td>', page)
    assert rows == [(str(h.cycle), h.version) for h in state["history"]], "one row per cycle"
    for decision in state["decisions"]:
        assert f"cycle {decision.cycle}: {decision.action}" in text
        assert decision.reason in text
    assert f"stopped: {state['final']['stop_reason']}" in text
    assert page.count("<svg") >= 4, "cycle charts, per-layer probe AUROC, risk histograms"
    assert "probes/probe-0: chosen layer." in text, "the start probe's sweep, per layer"


def test_the_samples_table_marks_what_was_selected_for_training(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    from views.report_data import read_jsonl

    root, _ = finished
    folder = root / "sessions/s1"
    page = (folder / "report.html").read_text()
    selected = [row["completion"] for row in read_jsonl(folder / "cycle-1/sft.jsonl")]
    assert selected, "the tiny session trained on some samples"
    rows = re.findall(r'<tr data-source="sample"[^>]*data-selected="(\d)">(.*?)</tr>', page, re.S)
    marked = [html.unescape(body) for flag, body in rows if flag == "1"]
    assert len(marked) >= len(set(selected))
    assert all(any(text in body for body in marked) for text in selected)
    assert any(flag == "0" for flag, _ in rows), "samples left out of training are there too"
    assert 'data-correct="wrong"' in page and 'data-source="dev"' in page
    assert 'id="f-wrong"' in page and 'id="f-risk"' in page and 'id="f-selected"' in page


def test_the_report_references_nothing_outside_the_page(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = finished
    page = (root / "sessions/s1/report.html").read_text()
    assert EXTERNAL.search(page) is None, EXTERNAL.search(page)


def test_the_external_url_check_catches_each_kind_of_reference() -> None:
    for snippet in (
        '<script src="https://cdn.example/x.js">',
        "<link href='//fonts.example/css'>",
        "<img src=http://x/y.png>",
        "body { background: url(https://x/y.png) }",
        "@import 'x.css';",
    ):
        assert EXTERNAL.search(snippet), snippet
    assert EXTERNAL.search('<a href="#cycles">') is None


def test_report_rebuilds_the_page_and_can_write_it_elsewhere(
    finished: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, state = finished
    out = tmp_path / "copy.html"
    result = runner.invoke(make_app(), ["report", "s1", "--root", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    assert f"stopped: {state['final']['stop_reason']}" in page_text(out)


def test_report_of_an_unknown_session_lists_the_sessions(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = finished
    result = runner.invoke(make_app(), ["report", "nope", "--root", str(root)])
    assert result.exit_code == 2
    assert "no session 'nope'" in result.output and "s1" in result.output


@pytest.mark.browser
def test_the_report_renders_from_disk_in_a_browser(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    """Opened from disk in chromium: no request leaves the file, every chart is drawn with
    a size, the stop reason shows, and the "selected for training" filter keeps exactly the
    selected rows."""
    browser_path = chromium_or_skip()
    playwright = pytest.importorskip("playwright.sync_api")
    root, state = finished
    path = root / "sessions/s1/report.html"
    shots = screenshot_folder()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(path.as_uri())
        assert state["final"]["stop_reason"] in page.locator("#stop-reason").inner_text()
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        charts = page.locator("svg")  # the probe's per-layer charts open from their <details>
        assert charts.count() >= 4
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box is not None and box["width"] > 50 and box["height"] > 50, f"chart {i}"
        selected = page.locator('#samples tr[data-selected="1"]').count()
        assert selected > 0
        page.locator("#f-selected").check()
        assert page.locator("#samples tr[data-source]:visible").count() == selected
        assert page.locator("#f-count").inner_text().startswith(f"{selected} of ")
        page.screenshot(path=str(shots / "report-html.png"), full_page=True)
        browser.close()
    assert all(url.startswith("file://") for url in requests), requests
