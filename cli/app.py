"""The `autodidact` app: `make_app(loaders)` wires every command group; `main` runs it with
the real loaders."""

from __future__ import annotations

import typer

from cli import models, report, serve, session, ui
from cli.common import Loaders, OneLineErrors
from cli.policy import policy_app
from cli.probe import probe_app
from cli.tasks import tasks_app
from cli.view import EventView, console_view


def make_app(loaders: Loaders | None = None, *, view: EventView = console_view) -> typer.Typer:
    """The typer app. `loaders`: how commands load models and tasks (default: the real
    ones); `view`: where a running session's events go (default: the console)."""
    loaders = loaders or Loaders()
    app = typer.Typer(
        help="autodidact: a language model that improves itself, steered by hallucination-risk probes.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        cls=OneLineErrors,  # a bad option value is one line, exit 2
        rich_markup_mode="markdown",  # docstrings' wrapped lines join into one paragraph
    )
    models.register(app, loaders)
    session.register(app, loaders, view)
    report.register(app)
    serve.register(app, loaders)
    app.add_typer(tasks_app(loaders), name="tasks")
    app.add_typer(policy_app(), name="policy")
    app.add_typer(probe_app(loaders), name="probe")
    ui.register(app)
    return app


def main() -> None:
    make_app()()


if __name__ == "__main__":
    main()
