"""Verifiable task suites: items, verifiers, deterministic grouped splits."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tasks.base import (
    MIN_SESSION_SPLITS,
    SPLITS,
    Item,
    Split,
    Task,
    TaskError,
    split_of,
    split_sizes_problem,
)
from tasks.verifiers import ANSWER_KEYS, VERIFIERS, normalize


def missing_file(task: str, path: object) -> str | None:
    """Why `task` cannot load as given: the `jsonl` task reads its items from a file.

    >>> missing_file("jsonl", None)
    'task jsonl needs a file: pass --path FILE.jsonl (or set task_path in the policy)'
    >>> missing_file("arithmetic", None) is None
    True
    """
    if task == "jsonl" and not path:
        return "task jsonl needs a file: pass --path FILE.jsonl (or set task_path in the policy)"
    return None


@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str
    build: Callable[..., Task]


def _arithmetic(**options: Any) -> Task:
    from tasks.arithmetic import build_arithmetic_task

    return build_arithmetic_task(**options)


def _capitals(**options: Any) -> Task:
    from tasks.capitals import build_capitals_task

    return build_capitals_task(**options)


def _facts(**options: Any) -> Task:
    from tasks.facts import build_facts_task

    return build_facts_task(**options)


def _jsonl(path: str | None = None, **options: Any) -> Task:
    from tasks.jsonl import load_jsonl_task

    if path is None:
        raise TaskError(missing_file("jsonl", path))
    task, _problems = load_jsonl_task(path, **options)
    return task


def _shapes(**options: Any) -> Task:
    from tasks.shapes import build_shapes_task

    return build_shapes_task(**options)


TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in (
        TaskInfo(
            "arithmetic", "seeded integer problems (digits, operators configurable)", _arithmetic
        ),
        TaskInfo("capitals", "country -> capital, about 250 items (countryinfo)", _capitals),
        TaskInfo(
            "facts",
            "country facts: capital, continent, demonym, language, currency (countryinfo)",
            _facts,
        ),
        TaskInfo("jsonl", "your file: question, answer|answers, optional group (--path)", _jsonl),
        TaskInfo(
            "shapes", "synthetic images, POPE-style yes/no questions (vision models)", _shapes
        ),
    )
}


def unknown_task_problem(name: str) -> str | None:
    """None for a registered task; else one line with the nearest name and the known ones.

    >>> unknown_task_problem("capitals") is None
    True
    >>> unknown_task_problem("capitls")
    "unknown task 'capitls': did you mean 'capitals'? (choose one of arithmetic, capitals, facts, jsonl, shapes)"
    """
    if name in TASKS:
        return None
    near = difflib.get_close_matches(name, TASKS, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown task {name!r}: {hint}(choose one of {', '.join(TASKS)})"


def get_task(name: str, **options: Any) -> Task:
    """Build a task by name; unknown names raise TaskError listing the known ones."""
    problem = unknown_task_problem(name)
    if problem:
        raise TaskError(problem)
    task = TASKS[name].build(**options)
    if not task.items:
        raise TaskError(f"task {name!r} has no items")
    return task


def with_verifier(task: Task, verifier: str | None) -> Task:
    """The task judged by another registered verifier (None: unchanged); unknown names
    raise TaskError listing the known ones."""
    if verifier is None or verifier == task.verifier_name:
        return task
    if verifier not in VERIFIERS:
        raise TaskError(f"unknown verifier {verifier!r}; choose one of {', '.join(VERIFIERS)}")
    return replace(task, verifier=VERIFIERS[verifier], verifier_name=verifier)


__all__ = [
    "ANSWER_KEYS",
    "MIN_SESSION_SPLITS",
    "SPLITS",
    "TASKS",
    "VERIFIERS",
    "Item",
    "Split",
    "Task",
    "TaskError",
    "get_task",
    "normalize",
    "split_of",
    "split_sizes_problem",
    "unknown_task_problem",
    "with_verifier",
]
