"""`autodidact policy show | validate | schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from graph.console import cli_command, console

policy_app = typer.Typer(help="Show, validate and describe session policies.", no_args_is_help=True)


@policy_app.command("show")
@cli_command
def show(
    preset: Annotated[str | None, typer.Option("--preset", help="quick or default.")] = None,
    policy_file: Annotated[Path | None, typer.Option("--policy", help="Policy YAML file.")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override key=value (repeatable).")
    ] = None,
) -> None:
    """The resolved policy (defaults < preset < file < --set) as YAML."""
    from graph.policy import dump_policy, resolve_policy

    print(dump_policy(resolve_policy(preset, policy_file, sets or [])), end="")


@policy_app.command("validate")
@cli_command
def validate(policy_file: Annotated[Path, typer.Argument(help="Policy YAML file.")]) -> None:
    """Check a policy file; exit 2 with the field and the fix when it is wrong."""
    from graph.policy import resolve_policy

    resolve_policy(None, policy_file, [])
    console.print(f"{policy_file}: valid")


@policy_app.command("schema")
@cli_command
def schema() -> None:
    """The policy's JSON Schema (for editors and form builders)."""
    from graph.policy import policy_schema

    print(json.dumps(policy_schema(), indent=2))
