"""`autodidact tasks list | show`: the task suites."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import Loaders, PathOption, VerifierOption, cli_command, console, positive


def tasks_list() -> None:
    """The built-in task suites."""
    from tasks import TASKS

    table = Table("task", "what")
    for info in TASKS.values():
        table.add_row(info.name, info.summary)
    console.print(table)


class TaskCommands:
    """`tasks show`, loading the task through `loaders`."""

    def __init__(self, loaders: Loaders) -> None:
        self.loaders = loaders

    def show(
        self,
        name: Annotated[str, typer.Argument(help="Task name.")],
        limit: Annotated[int, typer.Option(help="Items to show.")] = 5,
        path: PathOption = None,
        verifier: VerifierOption = None,
    ) -> None:
        """A task's description, verifier, split sizes and first items."""
        from tasks import with_verifier

        positive(limit, "--limit")
        task = with_verifier(self.loaders.load_task(name, path), verifier)
        sizes = ", ".join(f"{split} {len(task.split(split))}" for split in ("train", "dev", "test"))
        console.print(
            f"[bold]{task.name}[/]: {task.description}; verifier {task.verifier_name}; {sizes}"
        )
        table = Table("id", "group", "prompt", "answers")
        for item in task.items[:limit]:
            table.add_row(item.id, item.group, item.prompt, " | ".join(item.answers))
        console.print(table)


def tasks_app(loaders: Loaders) -> typer.Typer:
    app = typer.Typer(help="List and inspect the task suites.", no_args_is_help=True)
    app.command("list")(cli_command(tasks_list))
    app.command("show")(cli_command(TaskCommands(loaders).show))
    return app
