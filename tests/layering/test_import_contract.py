"""The layering contract (`[tool.importlinter]` in pyproject.toml, run by `make check`)
holds on the packages as they are, and breaks on a copy with an upward import or a circle
added, so it cannot pass vacuously."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "benchmarks",
    "cli",
    "views",
    "graph",
    "serving",
    "agents",
    "probes",
    "engines",
    "tasks",
    "storage",
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root` (PYTHONPATH: that copy, not the install)."""
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    return subprocess.run(
        [*command, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages and pyproject.toml, copied (sources only)."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_packages_keep_the_contract(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("file", "target", "refused"),
    [
        ("agents/evaluate.py", "graph.policy", "agents is not allowed to import graph"),
        # the run never imports its views: the CLI wires them in
        ("graph/session.py", "views.report_html", "graph is not allowed to import views"),
    ],
)
def test_an_upward_import_breaks_it(copy: Path, file: str, target: str, refused: str) -> None:
    add_line(copy / file, f"import {target}  # noqa")
    result = lint_imports(copy)
    assert result.returncode == 1
    assert refused in result.stdout
    assert f"{file.removesuffix('.py').replace('/', '.')} -> {target}" in result.stdout


def test_a_lazy_upward_import_breaks_it_too(copy: Path) -> None:
    add_line(copy / "storage" / "urls.py", "def late() -> None:\n    import probes.metrics  # noqa")
    result = lint_imports(copy)
    assert result.returncode == 1
    assert "storage.urls -> probes.metrics" in result.stdout


def test_a_circle_inside_a_package_breaks_it(copy: Path) -> None:
    add_line(copy / "storage" / "urls.py", "import storage.records  # noqa")
    result = lint_imports(copy)
    assert result.returncode == 1
    assert "No cycles are allowed in storage" in result.stdout
