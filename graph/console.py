"""Shared CLI plumbing: one console, one-line errors with exit code 2, progress bars."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=False)
err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: shown as one line, exit code 2, no traceback."""
    from engines.loading import ModelNotFoundError
    from tasks.base import TaskError

    errors: list[type[BaseException]] = [ModelNotFoundError, TaskError, FileNotFoundError]
    for module, name in (
        ("graph.policy", "PolicyError"),
        ("storage.errors", "StoreError"),
        ("storage.artifacts", "ArtifactIntegrityError"),
        ("probes.artifact", "StaleProbeError"),
        ("probes.artifact", "ProbeLoadError"),
        ("probes.artifact", "ProbeMismatchError"),
        ("probes.labels", "LabelError"),
        ("agents.chat_model", "ChatModelError"),
    ):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def cli_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn known user errors into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except user_errors() as error:
            raise fail(str(error).splitlines()[0] if str(error) else type(error).__name__) from None

    return wrapper


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields an `on_progress(done, total)` callback."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task_id = progress.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            progress.update(task_id, completed=done, total=new_total)

        yield update


def new_output_dir(root: Path, prefix: str) -> Path:
    path = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
    path.mkdir(parents=True)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    os.replace(tmp, path)


def positive(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise fail(f"{name} must be at least 1 (got {value})")
