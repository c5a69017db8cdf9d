"""`autodidact serve`: a model and its gate behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cli.common import (
    DEFAULT_ROOT,
    Loaders,
    ModelOption,
    RootOption,
    cli_command,
    console,
    err_console,
    fail,
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

API_KEY_ENV = "AUTODIDACT_API_KEY"


class ServeCommand:
    def __init__(self, loaders: Loaders) -> None:
        self.loaders = loaders

    def serve(
        self,
        model: ModelOption = DEFAULT_MODEL,
        probe: ProbeOption = None,
        refine: Annotated[
            str | None,
            typer.Option(
                "--refine",
                help="The gate: abstain (the default with --probe: answer the abstention text "
                "above --high), risk_adaptive, self_consistency, best_of_n, or none (sample "
                "as each request asks; the default without a probe).",
            ),
        ] = None,
        low: LowOption = Thresholds().low,
        high: HighOption = Thresholds().high,
        name: Annotated[
            str | None,
            typer.Option(help="The model name clients ask for (default: the model's own)."),
        ] = None,
        host: Annotated[
            str, typer.Option(help="Interface to listen on (loopback: this machine only).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
        max_batch: Annotated[
            int, typer.Option(min=1, help="Most requests answered in one batch.")
        ] = 16,
        max_wait_ms: Annotated[
            float,
            typer.Option(min=0.0, help="How long a batch's first request waits for others."),
        ] = 10.0,
        max_queue: Annotated[
            int, typer.Option(min=1, help="Requests that may wait; one more is refused (429).")
        ] = 64,
        max_tokens: Annotated[
            int, typer.Option(min=1, help="Most new tokens a request may ask for (its default).")
        ] = 256,
        session: SessionOption = None,
        root: RootOption = DEFAULT_ROOT,
        api_key_env: Annotated[
            str,
            typer.Option(
                help="Environment variable holding the API key clients must send (Authorization: "
                "Bearer KEY); unset or empty: no key asked. The key is never taken on the command line."
            ),
        ] = API_KEY_ENV,
    ) -> None:
        """Serve a model with its hallucination gate over an OpenAI-compatible HTTP API:
        POST /v1/chat/completions (streaming too), GET /v1/models, GET /health. Each answer
        carries its risk and route in the `autodidact` field of the response."""
        import uvicorn

        from agents.refine import STRATEGIES
        from serving.app import ServeSettings, make_app
        from serving.gate import GatedModel, measured_by

        gate = chosen_gate(
            model,
            probe,
            low,
            high,
            session=session,
            root=root,
            needs_probe=refine not in (None, "none"),
        )
        model, probe, thresholds, name = gate.model, gate.probe, gate.thresholds, name or gate.name
        strategy = refine or ("abstain" if probe is not None else "none")
        if strategy not in STRATEGIES:
            raise fail(f"--refine must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
        if strategy in ("abstain", "risk_adaptive") and probe is None:
            raise fail(f"--refine {strategy} routes on the probe's risk: pass --probe DIR")
        fitted = load_probe_folder(probe) if probe is not None else None  # before the model
        engine = self.loaders.load_engine(model)
        risk_fn = None if probe is None else probe_risk(fitted, engine, probe)
        context, count = measured_by(engine)
        gated = GatedModel(
            name or engine.name,
            engine,
            risk_fn,
            strategy,  # type: ignore[arg-type]
            thresholds,
            context_length=context,
            count_tokens=count,
        )
        key = os.environ.get(api_key_env) or None
        settings = ServeSettings(max_batch, max_wait_ms, max_queue, max_tokens, key)
        shown = (
            f"{strategy} (low {thresholds.low:g}, high {thresholds.high:g})" if probe else strategy
        )
        console.print(
            f"serving {gated.name!r} at http://{host}:{port}/v1 (gate: {shown}; API key: "
            f"{'required' if key else 'none'})",
            highlight=False,
        )
        if host not in ("127.0.0.1", "localhost", "::1") and not key:
            err_console.print(f"[yellow]listening on {host} without an API key ({api_key_env})[/]")
        uvicorn.run(make_app(gated, settings), host=host, port=port, log_level="warning")


def register(app: typer.Typer, loaders: Loaders) -> None:
    app.command("serve")(cli_command(ServeCommand(loaders).serve))
