"""`SessionLayout`: the names it gives are the names sessions on disk already have (spelled
out here, so that a change of format fails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.layout import SessionLayout

LAYOUT_OF_S1 = SessionLayout.of(Path("/r"), "s1")
ON_DISK = [  # (what the layout says, what a session folder holds)
    (SessionLayout.sessions_folder("/r"), "/r/sessions"),
    (LAYOUT_OF_S1.folder, "/r/sessions/s1"),
    (LAYOUT_OF_S1.policy, "/r/sessions/s1/policy.json"),
    (LAYOUT_OF_S1.report_json, "/r/sessions/s1/report.json"),
    (LAYOUT_OF_S1.report_html, "/r/sessions/s1/report.html"),
    (LAYOUT_OF_S1.probes, "/r/sessions/s1/probes"),
    (LAYOUT_OF_S1.versions, "/r/sessions/s1/versions"),
    (LAYOUT_OF_S1.version("v2"), "/r/sessions/s1/versions/v2"),
    (LAYOUT_OF_S1.adapter("v2"), "/r/sessions/s1/versions/v2/adapter"),
    (LAYOUT_OF_S1.merged("v2"), "/r/sessions/s1/versions/v2/merged"),
    (SessionLayout.adapter_of(Path("/shared/v3")), "/shared/v3/adapter"),
    (SessionLayout.merged_of(Path("/shared/v3")), "/shared/v3/merged"),
    (SessionLayout.POLICY, "policy.json"),
    (SessionLayout.REPORT_JSON, "report.json"),
    (SessionLayout.REPORT_HTML, "report.html"),
    (SessionLayout.cycle_folder(3), "cycle-3"),
    (SessionLayout.attempts_name(3), "cycle-3/attempts.jsonl"),
    (SessionLayout.features_name(3), "cycle-3/features"),
    (SessionLayout.sft_name(3), "cycle-3/sft.jsonl"),
    (SessionLayout.pairs_name(3), "cycle-3/pairs.jsonl"),
    (SessionLayout.verdicts_name(3), "cycle-3/verdicts.jsonl"),
    (SessionLayout.dev_answers_name(0, "v0"), "cycle-0/dev-v0.jsonl"),
    (SessionLayout.session_probe_name(1), "probes/probe-1"),
    (SessionLayout.loop_probe_name(3), "probes/cycle-3"),
    (SessionLayout.version_name("v2"), "versions/v2"),
    (SessionLayout.ATTEMPTS_GLOB, "cycle-*/attempts.jsonl"),
    (SessionLayout.ADAPTERS_GLOB, "versions/v*/adapter"),
]


@pytest.mark.parametrize(("named", "on_disk"), ON_DISK, ids=[want for _, want in ON_DISK])
def test_names_are_the_on_disk_names(named: Path | str, on_disk: str) -> None:
    assert (named.as_posix() if isinstance(named, Path) else named) == on_disk


def test_a_layout_reads_back_its_names() -> None:
    assert LAYOUT_OF_S1.session_id == "s1"
    assert SessionLayout.cycle_number(SessionLayout.cycle_folder(12)) == 12
    assert SessionLayout.is_session_probe(SessionLayout.session_probe_name(0))
    assert not SessionLayout.is_session_probe(SessionLayout.loop_probe_name(1))


def test_globs_find_what_the_names_name(tmp_path: Path) -> None:
    layout = SessionLayout(tmp_path)
    for cycle in (2, 10):
        (tmp_path / SessionLayout.attempts_name(cycle)).parent.mkdir()
        (tmp_path / SessionLayout.attempts_name(cycle)).touch()
    layout.adapter("v1").mkdir(parents=True)
    SessionLayout.adapter_of(layout.versions / ".v2.tmp").mkdir(parents=True)  # a cut write
    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob(layout.ATTEMPTS_GLOB))
    assert found == [SessionLayout.attempts_name(10), SessionLayout.attempts_name(2)]
    assert list(tmp_path.glob(layout.ADAPTERS_GLOB)) == [layout.adapter("v1")]
