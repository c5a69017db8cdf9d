"""The `shapes` task: seeded images, balanced POPE-style questions, answers true to pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tasks import get_task
from tasks.base import TaskError
from tasks.shapes import COLOURS, build_shapes_task, pope_match


def detect_shapes(image: Image.Image) -> set[str]:
    """The "{colour} {shape}" objects visible in the pixels, read back independently of how
    they were drawn: each connected blob of one flat colour, classed by how much of its
    bounding box it fills (square ~1, circle ~pi/4, triangle ~1/2)."""
    pixels = np.asarray(image.convert("RGB"))
    found: set[str] = set()
    for colour, rgb in COLOURS.items():
        labels, count = ndimage.label((pixels == rgb).all(-1))
        for blob in ndimage.find_objects(labels):
            area = int((labels[blob] > 0).sum())
            height, width = blob[0].stop - blob[0].start, blob[1].stop - blob[1].start
            fill = area / (height * width)
            kind = "square" if fill > 0.93 else "circle" if fill > 0.65 else "triangle"
            found.add(f"{colour} {kind}")
        assert count == len(ndimage.find_objects(labels))
    return found


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    return build_shapes_task(n_images=30, questions_per_image=4, seed=3)


def test_deterministic_given_seed(task) -> None:  # type: ignore[no-untyped-def]
    again = build_shapes_task(n_images=30, questions_per_image=4, seed=3)
    assert [(i.id, i.prompt, i.answers, i.group, i.meta) for i in task.items] == [
        (i.id, i.prompt, i.answers, i.group, i.meta) for i in again.items
    ]
    assert all(
        a.image.tobytes() == b.image.tobytes() for a, b in zip(task.items, again.items, strict=True)
    )
    other = build_shapes_task(n_images=30, questions_per_image=4, seed=4)
    assert [i.prompt for i in other.items] != [i.prompt for i in task.items]


def test_half_the_questions_are_about_absent_shapes(task) -> None:  # type: ignore[no-untyped-def]
    assert len(task.items) == 30 * 4
    assert Counter(i.answers for i in task.items) == {("yes",): 60, ("no",): 60}
    per_image = Counter((i.group, i.answers[0]) for i in task.items)
    assert set(per_image.values()) == {2}  # two yes and two no for every image
    samplings = Counter(i.meta["sampling"] for i in task.items if i.answers == ("no",))
    assert samplings["adversarial"] > 0 and samplings["random"] > 0


def test_odd_question_count_stays_balanced_within_one() -> None:
    counts = Counter(
        i.answers[0] for i in build_shapes_task(n_images=7, questions_per_image=3).items
    )
    assert abs(counts["yes"] - counts["no"]) <= 1 and sum(counts.values()) == 21


def test_group_is_the_image(task) -> None:  # type: ignore[no-untyped-def]
    by_group: dict[str, set[int]] = {}
    for item in task.items:
        by_group.setdefault(item.group, set()).add(id(item.image))
        assert isinstance(item.image, Image.Image) and item.image.size == (224, 224)
    assert len(by_group) == 30
    assert all(len(images) == 1 for images in by_group.values())  # one image per group
    assert len({next(iter(images)) for images in by_group.values()}) == 30  # distinct images
    for split in ("train", "dev", "test"):
        others = {i.group for s in ("train", "dev", "test") if s != split for i in task.split(s)}
        assert not {i.group for i in task.split(split)} & others


def test_answers_match_the_pixels(task) -> None:  # type: ignore[no-untyped-def]
    """Absent shapes are really absent, present ones really drawn (read from the pixels)."""
    detected: dict[str, set[str]] = {}
    for item in task.items:
        if item.group not in detected:
            detected[item.group] = detect_shapes(item.image)  # type: ignore[arg-type]
            assert detected[item.group] == set(item.meta["objects"].split(", "))
        shape = item.meta["shape"]
        assert item.prompt == f"Is there a {shape} in the image? Answer yes or no."
        assert (shape in detected[item.group]) == (item.answers == ("yes",))


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("Yes.", "yes", True),
        ("yes", "no", False),
        ("NO, there isn't.", "no", True),
        ("There is no red circle in the image.", "no", True),
        ("Nope", "no", False),
        ("", "yes", False),
    ],
)
def test_pope_match(answer: str, reference: str, expected: bool) -> None:
    assert pope_match(answer, [reference]) is expected


def test_registry_and_bad_options() -> None:
    assert len(get_task("shapes", n_images=2).items) == 8
    with pytest.raises(TaskError, match="questions_per_image"):
        build_shapes_task(questions_per_image=40)
    with pytest.raises(TaskError, match="n_images"):
        build_shapes_task(n_images=0)
