"""`SessionLayout`: the names it gives are the names sessions on disk already have (spelled
out here, so that a change of format fails), and no other module spells a session path."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.layout import SessionLayout

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [
    "agents",
    "graph",
    "storage",
    "cli",
    "probes",
    "engines",
    "tasks",
    "benchmarks",
    "scripts",
]
LAYOUT = REPO / "storage" / "layout.py"

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


# -- no other module spells a session path ----------------------------------------------

# A string (an f-string with each {...} read as "{}") that spells a session path.
SESSION_PATH = re.compile(
    r"(^|/)cycle-(\{\}|\*|\d+)/"  # a cycle's folder, as a path part
    r"|\b(attempts|sft|pairs|verdicts)\.jsonl"
    r"|\bdev-(\{\}|v\d+)\.jsonl"
    r"|(^|/)(versions|probes)/"
    r"|^sessions/|/sessions\b"
    r"|\bpolicy\.json"
)
# Names that, joined onto a path with `/`, are a session's folder or file.
SESSION_PARTS = {
    "sessions",
    "versions",
    "probes",
    "adapter",
    "merged",
    "policy.json",
    "report.html",
}
# ArtifactStore methods taking an artifact name: a literal name there spells a session path.
NAMED_WRITES = {"write_json", "write_jsonl", "write_bytes", "add_dir", "verify"}


def spelled_paths(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every string in `tree` that spells a session path. Docstrings are
    let be: they describe the layout, they do not build paths."""
    nodes = list(ast.walk(tree))
    docstrings = {id(node.body[0].value) for node in nodes if has_docstring(node)}  # type: ignore[attr-defined]
    in_fstrings = {
        id(part) for node in nodes if isinstance(node, ast.JoinedStr) for part in node.values
    }
    skipped = docstrings | in_fstrings
    for node in nodes:
        if isinstance(node, ast.Constant | ast.JoinedStr) and id(node) not in skipped:
            text = template(node)
            if text is not None and SESSION_PATH.search(text):
                yield node.lineno, text
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                text = template(side)
                if text is not None and (text in SESSION_PARTS or text.startswith("cycle-")):
                    yield side.lineno, f"... / {text!r}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            text = template(node.args[0])
            if node.func.attr in NAMED_WRITES and text is not None:
                yield node.lineno, f".{node.func.attr}({text!r}, ...)"


def has_docstring(node: ast.AST) -> bool:
    documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    return isinstance(node, documented) and ast.get_docstring(node, clean=False) is not None


def template(node: ast.AST) -> str | None:
    """A string constant's text, an f-string's with each {...} as "{}"; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(template(part) or "{}" for part in node.values)
    return None


def test_no_module_but_the_layout_spells_a_session_path() -> None:
    sources = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
    found = [
        f"{path.relative_to(REPO)}:{line}: {text}"
        for path in sources
        if path != LAYOUT
        for line, text in spelled_paths(ast.parse(path.read_text()))
    ]
    assert not found, "name these with storage.layout.SessionLayout:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "code",
    [
        'name = f"cycle-{cycle}/attempts.jsonl"',
        'folder = root / "sessions" / session_id',
        'saved = folder / "policy.json"',
        'engine = load(version_dir / "merged")',
        'folder = root / f"cycle-{n}"',
        'artifacts.write_json("report.json", final)',
        'artifacts.add_dir(f"versions/{name}", path, kind="model")',
        'paths = folder.glob("cycle-*/attempts.jsonl")',
        'probe = f"probes/probe-{fits}"',
        'message = f"no session under {root}/sessions: see"',
    ],
)
def test_the_check_finds_a_spelled_path(code: str) -> None:
    assert list(spelled_paths(ast.parse(code))), code


@pytest.mark.parametrize(
    "code",
    [
        'def f():\n    """Reads `cycle-N/attempts.jsonl`."""',
        'key = f"cycle-{event.cycle or 0}"',  # an MLflow trace key, not a path
        'state["versions"][name]',
        'app.command("sessions")',
        'template = environment.get_template("report.html")',
        "artifacts.write_json(SessionLayout.REPORT_JSON, final)",
    ],
)
def test_the_check_lets_other_strings_be(code: str) -> None:
    assert not list(spelled_paths(ast.parse(code))), code
