"""`jsonl`: a user's file, one JSON object a line: `question`, `answer` or `answers`,
optional `group`, `id`, `label` (1 = the model's answer is known wrong, for probes) and
`image`: an image file for vision-language models, relative to the JSONL file's folder (or
absolute), opened with PIL into `Item.image`; a row with an image and no `group` is grouped
by its image file, so an image never spans two splits. Malformed rows, rows whose image is
missing or unreadable, and the later rows of a repeated id, are reported with their line
numbers and skipped.

Answers are judged by `numeric` when every answer is a number, else by `alias`; pass
`verifier` to choose."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.base import Item, Task, TaskError
from tasks.textfile import read_utf8
from tasks.verifiers import VERIFIERS, is_number


class JsonlRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str = Field(min_length=1, description="the prompt shown to the model")
    answer: str | None = Field(None, description="the reference answer")
    answers: list[str] | None = Field(None, description="several accepted answers")
    group: str | None = Field(None, description="rows sharing a group share a split")
    id: str | None = Field(None, description="a stable row id (default: line number)")
    label: int | None = Field(None, ge=0, le=1, description="1 = hallucinated, for probes")
    image: str | None = Field(
        None, min_length=1, description="an image file, relative to the JSONL file's folder"
    )

    @model_validator(mode="after")
    def _has_reference(self) -> JsonlRow:
        if not self.answer and not self.answers:
            raise ValueError("needs `answer` (a string) or `answers` (a list of strings)")
        return self

    def references(self) -> tuple[str, ...]:
        return tuple(self.answers or []) + ((self.answer,) if self.answer else ())

    def item_id(self, line: int) -> str:
        """The item's id: the row's own, else its line number."""
        return self.id or f"line-{line}"

    def item_group(self, line: int, folder: Path) -> str:
        """The item's group: the row's own, else its image file's, else its id."""
        if self.group:
            return self.group
        return image_group(folder, self.image) if self.image else self.item_id(line)


@dataclass(frozen=True)
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def parse_jsonl(text: str) -> tuple[list[tuple[int, JsonlRow]], list[RowProblem]]:
    """Parse every non-blank line; keep clean rows (the first of each id), report the rest
    with line numbers.

    >>> text = '{"question": "2+2?", "answer": "4"}\\n{"question": "x"}\\nnot json'
    >>> rows, problems = parse_jsonl(text)
    >>> [line for line, _ in rows], [p.line for p in problems]
    ([1], [2, 3])
    """
    rows, problems = parse_rows(text)
    kept, repeats = drop_repeated_ids(rows)
    return kept, sorted(problems + repeats, key=lambda problem: problem.line)


def parse_rows(text: str) -> tuple[list[tuple[int, JsonlRow]], list[RowProblem]]:
    """Every non-blank line parsed: the valid rows, and the others' problems."""
    rows, problems = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((line_number, JsonlRow.model_validate(json.loads(line))))
        except json.JSONDecodeError as error:
            problems.append(RowProblem(line_number, f"not valid JSON ({error.msg})"))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            problems.append(RowProblem(line_number, f"{where}: {first['msg']}"))
    return rows, problems


def drop_repeated_ids(
    rows: Sequence[tuple[int, JsonlRow]],
) -> tuple[list[tuple[int, JsonlRow]], list[RowProblem]]:
    """The first row of each id kept; each later one reported.

    >>> text = '{"question": "a", "answer": "1", "id": "x"}\\n{"question": "b", "answer": "2", "id": "x"}'
    >>> kept, repeats = drop_repeated_ids(parse_rows(text)[0])
    >>> [line for line, _ in kept], [str(problem) for problem in repeats]
    ([1], ["line 2: id 'x' repeats line 1's (the first is kept)"])
    """
    first: dict[str, int] = {}
    kept, repeats = [], []
    for line, row in rows:
        item_id = row.item_id(line)
        if item_id in first:
            message = f"id {item_id!r} repeats line {first[item_id]}'s (the first is kept)"
            repeats.append(RowProblem(line, message))
            continue
        first[item_id] = line
        kept.append((line, row))
    return kept, repeats


def image_group(folder: Path, name: str) -> str:
    """The group of the rows naming image `name`: the file it resolves to, relative to the
    JSONL file's `folder`, so every name of one file gives one group wherever the folder is.

    >>> image_group(Path("/data"), "cats/../cat.png"), image_group(Path("/data"), "/data/cat.png")
    ('image:cat.png', 'image:cat.png')
    """
    return "image:" + os.path.relpath((folder / name).resolve(), folder.resolve())


def open_image(path: Path) -> Image.Image:
    """The image at `path` as RGB, read in full (the file is closed on return)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def read_image(folder: Path, name: str) -> Image.Image | str:
    """The image `name` names (relative to `folder`, or absolute), or why it cannot be read."""
    path = folder / name
    if not path.exists():
        return f"image {name!r} not found (looked in {path.parent})"
    try:
        return open_image(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"image {name!r} is not an image PIL can read ({error})"


def read_row_images(
    rows: Sequence[tuple[int, JsonlRow]], folder: Path
) -> tuple[list[tuple[int, JsonlRow, Image.Image | None]], list[RowProblem]]:
    """Each row with the image it names (None for a row without one); a row whose image
    cannot be read is reported instead. Rows naming one file share one image, read once."""
    read: dict[Path, Image.Image | str] = {}
    kept: list[tuple[int, JsonlRow, Image.Image | None]] = []
    problems = []
    for line, row in rows:
        if row.image is None:
            kept.append((line, row, None))
            continue
        resolved = (folder / row.image).resolve()
        if resolved not in read:
            read[resolved] = read_image(folder, row.image)
        image = read[resolved]
        if isinstance(image, str):
            problems.append(RowProblem(line, image))
        else:
            kept.append((line, row, image))
    return kept, problems


def default_verifier(rows: Sequence[JsonlRow]) -> str:
    """`numeric` when every answer of every row is a number, else `alias`.

    >>> row = lambda *answers: JsonlRow(question="q", answers=list(answers))
    >>> default_verifier([row("32"), row("-1.5", "1,204")]), default_verifier([row("32"), row("Paris")])
    ('numeric', 'alias')
    """
    numeric = all(is_number(ref) for row in rows for ref in row.references())
    return "numeric" if rows and numeric else "alias"


def load_jsonl_task(path: str | Path, verifier: str | None = None) -> tuple[Task, list[RowProblem]]:
    """The task from a JSONL file, and the problems of the rows left out; `verifier`
    None: `default_verifier` of the clean rows. Images are read relative to the file's folder.

    Fails (TaskError) when the file is missing or holds no clean row."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"jsonl: no file at {path}; pass --path to a JSONL file")
    if verifier is not None and verifier not in VERIFIERS:
        raise TaskError(
            f"jsonl: unknown verifier {verifier!r}; choose one of {', '.join(VERIFIERS)}"
        )
    rows, problems = parse_jsonl(read_utf8(path))
    folder = path.absolute().parent
    loaded, image_problems = read_row_images(rows, folder)
    problems = sorted(problems + image_problems, key=lambda problem: problem.line)
    if not loaded:
        detail = f"; first problem: {problems[0]}" if problems else ""
        raise TaskError(f"jsonl: {path} has no usable row{detail}")
    verifier = verifier or default_verifier([row for _, row, _ in loaded])
    items = tuple(
        Item(
            id=row.item_id(line),
            prompt=row.question,
            answers=row.references(),
            group=row.item_group(line, folder),
            image=image,
            meta={"label": str(row.label)} if row.label is not None else {},
        )
        for line, row, image in loaded
    )
    task = Task(
        name=f"jsonl:{path.name}",
        items=items,
        verifier=VERIFIERS[verifier],
        verifier_name=verifier,
        description=f"{len(items)} rows from {path}",
    )
    return task, problems
