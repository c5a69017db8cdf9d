"""JSONL rows that name an image file: loaded with PIL, grouped by image, bad ones skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import make_app
from tasks.base import SPLITS, TaskError
from tasks.jsonl import load_jsonl_task


def write_png(path: Path, colour: tuple[int, ...], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), colour).save(path)
    return path


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def row(question: str, image: str | None = None, **fields: object) -> dict[str, object]:
    return {"question": question, "answer": "yes", **({"image": image} if image else {}), **fields}


def test_rows_naming_images_load_them_as_rgb(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", (255, 0, 0))
    write_png(tmp_path / "pics" / "grey.png", (90,), mode="L")
    absolute = write_png(tmp_path / "elsewhere" / "blue.png", (0, 0, 255))
    path = write_rows(
        tmp_path / "vqa.jsonl",
        [row("Red?", "red.png"), row("Grey?", "pics/grey.png"), row("Blue?", str(absolute))],
    )
    task, problems = load_jsonl_task(path)
    assert problems == []
    images = [item.image for item in task.items if isinstance(item.image, Image.Image)]
    assert len(images) == 3 and all(image.mode == "RGB" for image in images)
    assert [image.getpixel((0, 0)) for image in images] == [(255, 0, 0), (90, 90, 90), (0, 0, 255)]


def test_images_are_read_from_the_jsonl_files_folder_not_the_working_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_png(tmp_path / "data" / "red.png", (255, 0, 0))
    write_rows(tmp_path / "data" / "vqa.jsonl", [row("Red?", "red.png")])
    monkeypatch.chdir(tmp_path)
    task, problems = load_jsonl_task("data/vqa.jsonl")
    assert problems == [] and isinstance(task.items[0].image, Image.Image)


def test_a_missing_image_is_reported_with_its_line_and_skipped(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", (255, 0, 0))
    path = write_rows(
        tmp_path / "vqa.jsonl",
        [row("Red?", "red.png"), row("Cat?", "cat.png"), row("Capital of Peru?")],
    )
    task, problems = load_jsonl_task(path)
    assert [item.prompt for item in task.items] == ["Red?", "Capital of Peru?"]
    assert task.items[1].image is None
    assert [str(p) for p in problems] == [
        f"line 2: image 'cat.png' not found (looked in {tmp_path})"
    ]


def test_a_file_that_is_not_an_image_is_reported_and_skipped(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", (255, 0, 0))
    (tmp_path / "x.png").write_text("not a picture")
    path = write_rows(tmp_path / "vqa.jsonl", [row("X?", "x.png"), row("Red?", "red.png")])
    task, problems = load_jsonl_task(path)
    assert [item.prompt for item in task.items] == ["Red?"]
    assert [p.line for p in problems] == [1]
    assert str(problems[0]).startswith("line 1: image 'x.png' is not an image PIL can read (")


def test_a_file_whose_every_image_is_missing_fails(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "vqa.jsonl", [row("Cat?", "cat.png"), row("Dog?", "dog.png")])
    with pytest.raises(TaskError) as error:
        load_jsonl_task(path)
    assert "has no usable row; first problem: line 1: image 'cat.png' not found" in str(error.value)


def test_the_cli_refuses_such_a_file_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "vqa.jsonl", [row("Cat?", "cat.png")])
    result = CliRunner().invoke(make_app(), ["tasks", "show", "jsonl", "--path", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "image 'cat.png' not found" in lines[0], result.stderr
    assert not result.stdout.strip(), result.stdout


def test_rows_naming_one_image_share_a_group(tmp_path: Path) -> None:
    write_png(tmp_path / "red.png", (255, 0, 0))
    write_png(tmp_path / "blue.png", (0, 0, 255))
    path = write_rows(
        tmp_path / "vqa.jsonl",
        [
            row("Red?", "red.png"),
            row("Round?", "./red.png"),
            row("Blue?", "blue.png"),
            row("Square?", "red.png", group="mine"),
            row("2+2?"),
        ],
    )
    task, _ = load_jsonl_task(path)
    groups = [item.group for item in task.items]
    assert groups[0] == groups[1] != groups[2]
    assert groups[3:] == ["mine", "line-5"]  # a row's own group, or its id, as without images


def test_an_image_never_spans_two_splits(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        write_png(tmp_path / f"img{i}.png", (20 * i, 0, 0))
        rows += [row(f"Question {q} about image {i}?", f"img{i}.png") for q in range(5)]
    task, problems = load_jsonl_task(write_rows(tmp_path / "vqa.jsonl", rows))
    assert problems == [] and len(task.items) == 60
    split_of_image: dict[str, set[str]] = {}
    for split in SPLITS:
        for item in task.split(split):
            split_of_image.setdefault(item.prompt.rsplit(" ", 1)[1], set()).add(split)
    assert len(split_of_image) == 12
    assert all(len(splits) == 1 for splits in split_of_image.values())
    assert len(set().union(*split_of_image.values())) > 1  # the images do spread over splits
