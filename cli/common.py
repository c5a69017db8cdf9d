"""Shared CLI plumbing: one console, one-line errors with exit code 2, progress bars, the
loaders commands receive, and the options several commands take."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.vlm import VLMEngine
    from tasks.base import Task

console = Console(stderr=False)
err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_ROOT = Path("runs")

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model name, local folder or cached hub id.")
]
TaskOption = Annotated[
    str, typer.Option("--task", "-t", help="Task suite name (see `autodidact tasks list`).")
]
PathOption = Annotated[Path | None, typer.Option("--path", help="JSONL file for --task jsonl.")]
VerifierOption = Annotated[
    str | None,
    typer.Option(
        "--verifier",
        help="Judge answers with exact, alias, numeric, yes_no or pope (default: the task's "
        "own; a JSONL file's is numeric when every answer is a number, else alias).",
    ),
]
ImageOption = Annotated[
    Path | None,
    typer.Option(
        "--image", help="Image file the question is about (needs a vision-language --model)."
    ),
]
OutOption = Annotated[Path, typer.Option("--out", help="Folder under which results are written.")]
RootOption = Annotated[
    Path, typer.Option("--root", help="Folder for sessions, the SQLite store and runs.")
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="sqlite:///PATH (default: ROOT/autodidact.db) or redis://[:PASSWORD@]HOST:PORT/DB.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PolicyFileOption = Annotated[Path | None, typer.Option("--policy", help="Policy YAML file.")]
# graph.policy.PRESETS' names, copied: importing graph.policy here would add about a second
# to every command's start; tests/cli/test_cli.py keeps the two equal.
PRESET_NAMES = ("default", "quick", "honesty")
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help=f"Policy preset: {', '.join(PRESET_NAMES)} (`policy show --preset NAME` prints one).",
    ),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Policy override key=value (repeatable).")
]


def compact_table(title: str, *headers: str, wrap: tuple[str, ...] = ()) -> Table:
    """A narrow table: no vertical rules, two spaces between columns; no cell is ever cut
    (those in `wrap` wrap at spaces, the others fold), so ids and numbers show whole."""
    table = Table(
        title=title or None,
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
    )
    for header in headers:
        table.add_column(header, overflow="fold", no_wrap=header not in wrap)
    return table


def fits(renderable: Any) -> bool:
    """Whether `renderable` fits the console's width without wrapping or folding."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(10_000)
    return Measurement.get(console, unbounded, renderable).maximum <= console.width


def load_task(name: str, path: Path | None) -> Task:
    """A built-in task suite, or `jsonl` read from `path` (skipped rows reported)."""
    from tasks import get_task, missing_file
    from tasks.jsonl import load_jsonl_task

    missing = missing_file(name, path)
    if missing:
        raise fail(missing)
    if name != "jsonl" or path is None:
        return get_task(name)
    task, problems = load_jsonl_task(path)
    for problem in problems:
        console.print(f"[yellow]skipped[/] {path}:{problem}", highlight=False)
    return task


def text_task(task: Task) -> Task:
    """`task`, refused in one line when its items carry images: the commands that run a
    model on a task (`run`, `eval`, `probe sweep`, `probe eval`) run text models, which
    would answer questions about pictures they cannot see."""
    if any(item.image is not None for item in task.items):
        raise fail(
            f"task {task.name!r} asks about images, and this command runs it on text models "
            "only: give `--model` a vision-language model's folder (`make vlm` trains one)"
        )
    return task


def image_task(task: Task) -> Task:
    """`task`, refused in one line unless every item carries an image."""
    without = sum(item.image is None for item in task.items)
    if without:
        raise fail(
            f"task {task.name!r} has {without} items without an image, and a vision-language "
            "model answers questions about images: use `--task shapes` or a JSONL file whose "
            "rows name an `image`"
        )
    return task


def load_engine(model: str) -> Engine:
    """The model's engine, with a spinner while it loads."""
    from engines.factory import load_engine as load_kind

    with console.status(f"loading {model}"):
        return load_kind(model)


def load_vlm_engine(model: str) -> VLMEngine:
    """A vision-language model's folder as an engine, with a spinner while it loads."""
    from engines.vlm import VLMEngine

    with console.status(f"loading {model}"):
        return VLMEngine.load(model)


def is_vlm(model: str) -> bool:
    """Whether `model` names a vision-language model's folder (its config has a vision tower)."""
    from engines.vlm import is_vlm_folder

    return is_vlm_folder(model)


def engine_problem(kind: str) -> str | None:
    """Why engine `kind` cannot load in this Python (None: it can)."""
    from engines.loading import engine_problem as problem

    return problem(kind)


def load_vllm_engine(model: str) -> Engine:
    """The model's vLLM engine (and its transformers copy for prefill states)."""
    from engines.factory import load_engine as load_kind

    with console.status(f"loading {model} in vLLM"):
        return load_kind(model, "vllm")


def load_cluster_engine(model: str, cluster: Any) -> Engine:
    """The model on Ray generation actors (`cluster`: the policy's `ClusterPolicy`); more
    than one node needs `cluster.storage`, checked once connected."""
    from engines.cluster import PoolOptions, connect
    from engines.factory import load_cluster_engine as load_on_cluster

    with console.status(f"connecting to Ray ({cluster.address or 'a local Ray'})"):
        nodes = connect(cluster.address)
    if nodes > 1 and not cluster.storage:
        raise fail(
            f"the Ray cluster has {nodes} nodes: set cluster.storage to a folder every node "
            "shares (model versions are written there)"
        )
    resources = cluster.worker_resources
    options = PoolOptions(cluster.generation_workers, resources.CPU, resources.GPU)
    with console.status(f"loading {model} on {options.workers} Ray generation workers"):
        return load_on_cluster(model, options, address=cluster.address)


def backend_problem(backend: str) -> str | None:
    """Why cluster backend `backend` cannot run in this Python (None: it can)."""
    from engines.loading import backend_problem as problem

    return problem(backend)


@dataclass(frozen=True)
class Loaders:
    """How commands load models and tasks: `make_app` hands these to every command
    group; tests pass stand-ins (a tiny engine, a tiny task)."""

    load_engine: Callable[[str], Engine] = load_engine
    load_task: Callable[[str, Path | None], Task] = load_task
    load_vllm_engine: Callable[[str], Engine] = load_vllm_engine
    engine_problem: Callable[[str], str | None] = engine_problem  # checked before any write
    load_cluster_engine: Callable[[str, Any], Engine] = load_cluster_engine
    load_vlm_engine: Callable[[str], VLMEngine] = load_vlm_engine
    backend_problem: Callable[[str], str | None] = backend_problem  # checked before any write

    def engine(self, model: str, kind: str = "transformers", cluster: Any = None) -> Engine:
        """The engine of kind `kind` ('transformers' or 'vllm') over `model`; on Ray
        actors when `cluster` (the policy's section) says backend 'ray'."""
        if cluster is not None and cluster.backend == "ray":
            return self.load_cluster_engine(model, cluster)
        return self.load_vllm_engine(model) if kind == "vllm" else self.load_engine(model)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: shown as one line, exit code 2, no traceback."""
    from engines.loading import EngineNotInstalledError, ModelNotFoundError
    from tasks.base import TaskError
    from tasks.textfile import NotUtf8Error

    errors: list[type[BaseException]] = [
        ModelNotFoundError,
        EngineNotInstalledError,
        TaskError,
        NotUtf8Error,
        FileNotFoundError,
    ]
    for module, name in (
        ("graph.policy", "PolicyError"),
        ("storage.errors", "StoreError"),
        ("storage.artifacts", "ArtifactIntegrityError"),
        ("probes.artifact", "StaleProbeError"),
        ("probes.artifact", "ProbeLoadError"),
        ("probes.artifact", "ProbeMismatchError"),
        ("probes.labels", "LabelError"),
        ("agents.chat_model", "ChatModelError"),
        ("engines.vlm", "VLMFolderError"),
    ):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


class OneLineErrors(TyperGroup):
    """The app's command group: a bad option or argument value (typer's `BadParameter`,
    the `min=` of an option included) is one line and exit code 2, as other bad input is;
    typer's own report is a usage box of several lines."""

    def invoke(self, ctx: Any) -> Any:  # ctx: the group's click context
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:
            where = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
            raise fail(escape(error.format_message().rstrip(".")) + where) from None


def cli_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn known user errors, and a full disk, into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except user_errors() as error:
            raise fail(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
        except Exception as error:
            from cli.interrupts import disk_full, disk_full_line

            if isinstance(error, typer.Exit) or not disk_full(error):
                raise
            raise fail(f"{disk_full_line(error)}: free some space and run it again") from None

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


def new_progress() -> Progress:
    """Progress bars on stderr, gone when done: description, bar, done/total, elapsed."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=err_console, transient=True)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields an `on_progress(done, total)` callback."""
    with new_progress() as progress:
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
