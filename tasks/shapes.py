"""`shapes`: synthetic images of coloured shapes with POPE-style yes/no existence questions.

Each image is a white canvas with a few shapes (circle, square, triangle), each of a distinct
(colour, shape) pair, one per cell of a 3x3 grid so they never overlap. Each image gets
`questions_per_image` questions "Is there a {colour} {shape} in the image?": half about
shapes it holds (answer "yes"), half about shapes it does not (answer "no"). As in POPE,
absent shapes are drawn two ways: "adversarial" (sharing the colour or the shape of an
object in the image, e.g. a red square beside a red circle) and "random". All of an image's
questions share its group, so an image never spans two splits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tasks.base import Item, Task, TaskError
from tasks.verifiers import pope_match

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 170),
}
BACKGROUND = (255, 255, 255)
GRID = 3  # GRID x GRID cells, at most one shape per cell
INSTRUCTION = "Answer yes or no."


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    box: tuple[int, int, int, int]  # (left, top, right, bottom) pixels, inclusive

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


def draw_shapes(shapes: Sequence[Shape], size: int) -> Image.Image:
    """An RGB canvas with the shapes drawn in flat colours (no anti-aliasing)."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        left, top, right, bottom = shape.box
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse(shape.box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(shape.box, fill=fill)
        else:
            draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=fill)
    return image


def _layout(rng: random.Random, count: int, size: int) -> list[Shape]:
    """`count` shapes of distinct (colour, shape) pairs, each inside its own grid cell."""
    pairs = rng.sample([(c, k) for c in COLOURS for k in SHAPES], count)
    cells = rng.sample(range(GRID * GRID), count)
    cell = size // GRID
    shapes = []
    for (colour, kind), index in zip(pairs, cells, strict=True):
        side = rng.randint(int(cell * 0.45), int(cell * 0.8))
        left = (index % GRID) * cell + rng.randint(0, cell - side - 1)
        top = (index // GRID) * cell + rng.randint(0, cell - side - 1)
        shapes.append(Shape(colour, kind, (left, top, left + side, top + side)))
    return shapes


def _absent(rng: random.Random, shapes: Sequence[Shape], count: int) -> list[tuple[str, str]]:
    """`count` (name, sampling) pairs of shapes not in the image, adversarial ones first
    when the questions alternate: sharing a colour or a shape with an object present."""
    present = {(s.colour, s.kind) for s in shapes}
    candidates = [(c, k) for c in COLOURS for k in SHAPES if (c, k) not in present]
    colours, kinds = {c for c, _ in present}, {k for _, k in present}
    confusable = [p for p in candidates if p[0] in colours or p[1] in kinds]
    rng.shuffle(confusable)
    others = [p for p in candidates if p not in confusable]
    rng.shuffle(others)
    chosen: list[tuple[str, str]] = []
    for i in range(count):  # alternate adversarial / random while both are left
        pool = confusable if (i % 2 == 0 and confusable) or not others else others
        colour, kind = pool.pop()
        chosen.append((f"{colour} {kind}", "adversarial" if pool is confusable else "random"))
    return chosen


def question(name: str) -> str:
    """
    >>> question("red circle")
    'Is there a red circle in the image? Answer yes or no.'
    """
    return f"Is there a {name} in the image? {INSTRUCTION}"


def build_shapes_task(
    n_images: int = 100, questions_per_image: int = 4, seed: int = 0, image_size: int = 224
) -> Task:
    """`n_images` seeded images, `questions_per_image` yes/no questions each, half "no".

    With an odd `questions_per_image` the extra question alternates between "yes" and
    "no" from one image to the next, so the task stays balanced to within one item."""
    pairs = len(COLOURS) * len(SHAPES)
    max_present = min(GRID * GRID, pairs // 2)
    if n_images < 1:
        raise TaskError(f"shapes: n_images={n_images}; use 1 or more")
    if not 2 <= questions_per_image <= 2 * max_present:
        raise TaskError(
            f"shapes: questions_per_image={questions_per_image} is out of range; use 2 to "
            f"{2 * max_present}"
        )
    if image_size < 48:
        raise TaskError(f"shapes: image_size={image_size} is too small; use 48 pixels or more")
    rng = random.Random(seed)
    items: list[Item] = []
    for i in range(n_images):
        n_yes = questions_per_image // 2 + (questions_per_image % 2) * (i % 2 == 0)
        n_no = questions_per_image - n_yes
        shapes = _layout(
            rng, rng.randint(max(n_yes, 1), max(n_yes, min(max_present, 4))), image_size
        )
        image = draw_shapes(shapes, image_size)
        group = f"shapes-img-{i:05d}"
        objects = ", ".join(s.name for s in shapes)
        asked = [(s.name, "yes", "present") for s in rng.sample(shapes, n_yes)]
        asked += [(name, "no", sampling) for name, sampling in _absent(rng, shapes, n_no)]
        rng.shuffle(asked)
        for j, (name, answer, sampling) in enumerate(asked):
            items.append(
                Item(
                    id=f"{group}-q{j}",
                    prompt=question(name),
                    answers=(answer,),
                    group=group,
                    image=image,
                    meta={"shape": name, "sampling": sampling, "objects": objects},
                )
            )
    return Task(
        name="shapes",
        items=tuple(items),
        verifier=pope_match,
        verifier_name="pope",
        description=(
            f"{n_images} synthetic images, {questions_per_image} POPE-style yes/no questions "
            f"each (half about absent shapes), seed {seed}"
        ),
        max_new_tokens=32,  # room for "Yes, there is a red circle in the image."
    )
