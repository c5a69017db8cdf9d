"""The commands' vision-language path, on the tiny shapes VLM the tests train
(tests/conftest.py: `tiny_vlm`): `probe sweep | eval | score`, `eval` and `answer --image`
with a VLM folder and an image task (`shapes`, or a JSONL file whose rows name images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner, Result

from cli.app import make_app
from cli.common import Loaders
from tasks.shapes import build_shapes_task


def no_text_model(_model: str) -> NoReturn:
    raise AssertionError("a text model must not load")


def autodidact(*args: str) -> Result:
    return CliRunner().invoke(make_app(Loaders(load_engine=no_text_model)), list(args))


def one_line_exit_2(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's image task: 30 shapes images as PNG files and a JSONL naming them, one row
    naming a missing file."""
    folder = tmp_path_factory.mktemp("images")
    task = build_shapes_task(n_images=30, questions_per_image=4, seed=21, image_size=48)
    rows = []
    for item in task.items:
        path = folder / f"{item.group}.png"
        if not path.exists():
            item.image.save(path)  # type: ignore[union-attr]
        rows.append({"question": item.prompt, "answer": item.answers[0], "image": path.name})
    rows.insert(5, {"question": "Is there a red circle?", "answer": "yes", "image": "gone.png"})
    (folder / "shapes.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.fixture(scope="module")
def swept(tiny_vlm, images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("sweep")
    result = autodidact(
        "probe", "sweep", "--model", str(tiny_vlm[1]), "--task", "jsonl",
        "--path", str(images / "shapes.jsonl"), "--verifier", "pope", "--out", str(out),
    )  # fmt: skip
    return result, out


def test_probe_sweep_on_a_users_image_jsonl_chooses_a_family(swept) -> None:  # type: ignore[no-untyped-def]
    result, out = swept
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "gone.png" in result.output  # line 6, reported
    for family in ("visual", "vision_tokens", "query_token"):
        assert family in result.output
    (folder,) = out.iterdir()
    summary = json.loads((folder / "sweep.json").read_text())
    assert list(summary) == ["visual", "vision_tokens", "query_token"]
    card = json.loads((folder / "probe" / "card.json").read_text())
    assert card["feature_kind"] in summary
    assert (folder / "data" / "data.json").is_file() and (folder / "sweep.png").is_file()


def test_probe_eval_scores_the_held_out_images_with_the_baselines(  # type: ignore[no-untyped-def]
    tiny_vlm, images: Path, swept, tmp_path: Path
) -> None:
    _, out = swept
    (folder,) = out.iterdir()
    result = autodidact(
        "probe", "eval", str(folder / "probe"), "--model", str(tiny_vlm[1]), "--task", "jsonl",
        "--path", str(images / "shapes.jsonl"), "--verifier", "pope", "--k", "2",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (report_dir,) = tmp_path.iterdir()
    report = json.loads((report_dir / "report.json").read_text())
    methods = {row["method"] for row in report["methods"]}
    assert {"probe", "mean_logprob", "mean_entropy", "self_consistency"} <= methods


def test_probe_score_and_answer_read_the_image(tiny_vlm, images: Path, swept) -> None:  # type: ignore[no-untyped-def]
    _, out = swept
    (folder,) = out.iterdir()
    model, image = str(tiny_vlm[1]), str(next(images.glob("*.png")))
    question = "Is there a red circle in the image? Answer yes or no."
    scored = autodidact(
        "probe", "score", str(folder / "probe"), question, "-m", model, "--image", image
    )
    assert scored.exit_code == 0, scored.output
    risk = float(scored.output.strip())
    assert 0.0 <= risk <= 1.0
    plain = autodidact("answer", question, "-m", model, "--image", image, "--refine", "none")
    assert plain.exit_code == 0, plain.output
    assert "route greedy" in plain.output
    gated = autodidact(
        "answer", question, "-m", model, "--image", image, "--probe", str(folder / "probe"),
        "--refine", "abstain", "--low", "0", "--high", str(max(risk - 1e-3, 0.0)),
    )  # fmt: skip
    assert gated.exit_code == 0, gated.output
    assert f"risk {risk:.3f}; route abstain" in gated.output


def test_eval_prints_pope_by_question_type(tiny_vlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = autodidact(
        "eval", "--model", str(tiny_vlm[1]), "--task", "shapes", "--limit", "24",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "POPE by question type" in result.output
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["accuracy"]["n"] == 24
    assert sum(summary["pope"][t]["n"] for t in summary["pope"] if t != "overall") == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "sweep", "--task", "capitals"], "items without an image"),
        (["eval", "--task", "shapes", "--refine", "self_consistency"], "greedy answers"),
        (["answer", "Is there a red circle?"], "pass the question's --image"),
    ],
)
def test_vlm_misuse_is_one_line(tiny_vlm, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    one_line_exit_2(autodidact(*args, "--model", str(tiny_vlm[1])), message)


def test_an_image_needs_a_vlm_and_a_file(tiny_vlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one_line_exit_2(
        autodidact("answer", "Is it red?", "--image", str(tmp_path / "x.png")),
        "needs a vision-language model's folder",
    )
    one_line_exit_2(
        autodidact(
            "answer", "Is it red?", "-m", str(tiny_vlm[1]), "--image", str(tmp_path / "x.png")
        ),
        "no such file",
    )


def test_text_commands_refuse_a_vlm_folder(tiny_vlm) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(make_app(Loaders()), ["generate", "hi", "-m", str(tiny_vlm[1])])
    one_line_exit_2(result, "is a vision-language model")
