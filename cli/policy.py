"""`autodidact policy show | validate | schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import PolicyFileOption, PresetOption, SetOption, cli_command, console, fail


def show(
    preset: PresetOption = None, policy_file: PolicyFileOption = None, sets: SetOption = None
) -> None:
    """The resolved policy (defaults < preset < file < --set) as YAML."""
    from graph.policy import dump_policy, resolve_policy

    print(dump_policy(resolve_policy(preset, policy_file, sets or [])), end="")


def validate(policy_file: Annotated[Path, typer.Argument(help="Policy YAML file.")]) -> None:
    """Check a policy file; exit 2 with the field and the fix when it is wrong."""
    from graph.policy import resolve_policy
    from tasks import unknown_task_problem

    policy = resolve_policy(None, policy_file, [])
    problem = unknown_task_problem(policy.task)
    if problem:
        raise fail(f"{policy_file}: task: {problem}")
    console.print(f"{policy_file}: valid")


def schema() -> None:
    """The policy's JSON Schema (for editors and form builders)."""
    from graph.policy import policy_schema

    print(json.dumps(policy_schema(), indent=2))


def policy_app() -> typer.Typer:
    app = typer.Typer(help="Show, validate and describe session policies.", no_args_is_help=True)
    for name, fn in (("show", show), ("validate", validate), ("schema", schema)):
        app.command(name)(cli_command(fn))
    return app
