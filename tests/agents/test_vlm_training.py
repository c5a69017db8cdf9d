"""The shapes VLM (`agents.vlm_training`): POPE scoring, splits by image, the shared-prefix
loss, and the tiny variant trained end to end (tiny Llama from tests/tiny_models, a tiny
CLIP tower), which must beat chance on held-out images by a margin an untrained model and a
constant answerer both miss, reload from its cache folder, and give the three HALP feature
families. The tiny run takes about a minute of one CPU thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents import vlm_training as vlm
from agents.vlm_training import PopeRow, PopeScore, pope_scores
from probes.vlm import extract_vlm_features
from tasks.shapes import build_shapes_task

# Held-out accuracy the trained tiny model must reach. Chance is 0.5 (half the answers are
# "no"); on 256 test questions a coin-flipper reaches 0.60 with probability about 0.1%.
# The tiny run scored 0.73 (seed 0) and 0.67 (seed 1) on this machine.
LEARNED = 0.60


def learned(scores: dict[str, PopeScore]) -> bool:
    """The assertion the trained model must pass and the untrained one must fail."""
    return scores["overall"].accuracy >= LEARNED


# --------------------------------------------------------------------------- scoring


def test_pope_scores_per_type_and_overall() -> None:
    rows = [
        PopeRow("yes", "yes", "present"),
        PopeRow("yes", "yes", "present"),
        PopeRow("no", "yes", "present"),
        PopeRow("no", "no", "random"),
        PopeRow("yes", "no", "random"),
        PopeRow(None, "no", "adversarial"),
        PopeRow("no", "no", "adversarial"),
        PopeRow("yes", "no", "adversarial"),
    ]
    scores = pope_scores(rows)
    assert list(scores) == ["overall", "adversarial", "present", "random"]
    overall = scores["overall"]
    assert (overall.n, overall.accuracy, overall.yes_ratio, overall.unparsed) == (8, 0.5, 0.5, 1)
    # yes positive: tp 2, fp 2 (random, adversarial), fn 1 -> precision 1/2, recall 2/3
    assert overall.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    present = scores["present"]
    assert (present.accuracy, present.yes_ratio) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert present.f1 == pytest.approx(0.8)  # tp 2, fn 1
    assert scores["random"].accuracy == 0.5 and scores["random"].f1 is None  # no gold yes
    adversarial = scores["adversarial"]
    assert (adversarial.accuracy, adversarial.yes_ratio, adversarial.unparsed) == (
        pytest.approx(1 / 3),
        pytest.approx(1 / 3),
        1,
    )


def test_pope_rows_read_the_first_yes_or_no() -> None:
    items = build_shapes_task(n_images=1, questions_per_image=4, seed=0, image_size=48).items
    rows = vlm.pope_rows(items, ["Yes.", "no", "There is no such shape", "maybe"])
    assert [r.predicted for r in rows] == ["yes", "no", "no", None]
    assert [r.gold for r in rows] == [i.answers[0] for i in items]
    assert {r.kind for r in rows} <= {"present", "random", "adversarial"}


def test_empty_rows_score_zeros() -> None:
    score = vlm.pope_score([])
    assert (score.n, score.accuracy, score.f1, score.yes_ratio) == (0, 0.0, None, 0.0)


# --------------------------------------------------------------------------- splits


def test_split_by_image_puts_each_image_in_one_split() -> None:
    items = build_shapes_task(n_images=20, questions_per_image=4, seed=5, image_size=48).items
    splits = vlm.split_by_image(items, 12, 3, 5)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    groups = {name: {i.group for i in part} for name, part in parts.items()}
    assert [len(g) for g in groups.values()] == [12, 3, 5]
    assert [len(p) for p in parts.values()] == [48, 12, 20]  # every question of each image
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"])
    assert not groups["val"] & groups["test"]
    pixels = {name: {i.image.tobytes() for i in part} for name, part in parts.items()}  # type: ignore[attr-defined]
    assert not (pixels["train"] & pixels["val"] or pixels["train"] & pixels["test"])
    assert not pixels["val"] & pixels["test"]
    with pytest.raises(ValueError, match="build more images"):
        vlm.split_by_image(items, 12, 3, 6)


def test_recipe_splits_are_disjoint_images() -> None:
    recipe = vlm.Recipe(
        **{**vlm.TINY_RECIPE.model_dump(), "train_images": 10, "val_images": 4, "test_images": 4}
    )
    splits = vlm.build_splits(recipe)
    train, val, test = ({i.group for i in s} for s in (splits.train, splits.val, splits.test))
    assert (len(train), len(val), len(test)) == (10, 4, 4)
    assert not (train & val or train & test or val & test)


def test_recipe_refuses_inconsistent_sizes() -> None:
    base = vlm.TINY_RECIPE.model_dump()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vlm.Recipe(**{**base, "patch_size": 7})
    with pytest.raises(ValueError, match="lower eval_every"):
        vlm.Recipe(**{**base, "eval_every": base["steps"] + 1})


# --------------------------------------------------------------------------- model parts


@pytest.fixture(scope="module")
def parts() -> tuple[object, object, vlm.Encoded]:
    """A tiny untrained VLM, its processor, and six encoded train images."""
    recipe = vlm.Recipe(**{**vlm.TINY_RECIPE.model_dump(), "train_images": 6})
    text_model, tokenizer = vlm.load_text_model("tiny")
    processor = vlm.build_processor(tokenizer, recipe)
    model = vlm.build_vlm(text_model, processor, recipe)
    return model, processor, vlm.encode(vlm.build_splits(recipe).train, processor)


def test_prompt_is_the_text_models_chat_format_with_the_image_first(parts) -> None:  # type: ignore[no-untyped-def]
    _, processor, _ = parts
    tokenizer = processor.tokenizer
    text_only = tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nIs there a red circle?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert vlm.chat_prompt(processor, "Is there a red circle?") == text_only


def test_shared_prefix_loss_equals_the_full_prompt_loss(parts) -> None:  # type: ignore[no-untyped-def]
    """The prefix-once, cached batch gives the loss and gradients of full left-padded
    prompts. Measured here: loss equal to the last bit, gradient gap 6e-6 of 3.7."""
    model, processor, data = parts
    pad = processor.tokenizer.pad_token_id
    prefix = vlm.shared_prefix(data.prompts)
    assert processor.image_token_id not in data.prompts[0][prefix:]
    images = [0, 3]
    batch = vlm.image_batch(data, images, prefix, pad)
    rows = [r for i in images for r in data.items_of_image[i]]
    seqs = [data.prompts[r] + data.answers[r] for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    k = batch.answer_mask.shape[1]
    weight = model.model.vision_tower.embeddings.patch_embedding.weight

    model.zero_grad()
    shared = vlm.answer_loss(model, batch)
    shared.backward()
    shared_grad = weight.grad.clone()
    model.zero_grad()
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        pixel_values=data.pixels[data.image_of_item[rows]],
    ).logits
    full = torch.nn.functional.cross_entropy(
        logits[:, -k - 1 : -1][batch.answer_mask], ids[:, -k:][batch.answer_mask]
    )
    full.backward()
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_grad, weight.grad, atol=1e-4, rtol=1e-4)
    model.zero_grad()


def test_save_leaves_no_half_folder_when_it_fails(parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = parts

    class Broken:
        def save_pretrained(self, folder: Path) -> None:
            (Path(folder) / "partial").write_text("x")
            raise OSError("disk full")

    record = vlm.TrainingRecord(
        recipe=vlm.TINY_RECIPE,
        encoder_val={},
        best_step=0,
        steps_done=0,
        stopped_by_deadline=False,
        val={},
        test={},
        history=[],
        seconds={},
    )
    with pytest.raises(OSError, match="disk full"):
        vlm.save_vlm(model, Broken(), record, tmp_path / "vlm")
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        vlm.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--text-model", "--out", "--minutes", "--steps", "--images"):
        assert option in out


# --------------------------------------------------------------------------- the tiny run


@pytest.fixture
def trained(tiny_vlm):  # type: ignore[no-untyped-def]
    """The tiny recipe trained once per test session (tests/conftest.py)."""
    return tiny_vlm


def test_tiny_vlm_learns_above_chance_on_held_out_images(trained) -> None:  # type: ignore[no-untyped-def]
    record, _ = trained
    assert record.test["overall"].n == vlm.TINY_RECIPE.test_images * 4
    assert learned(record.test), record.test["overall"]
    assert record.best_step in [h["step"] for h in record.history]
    assert record.val["overall"].accuracy == max(
        h["val"]["overall"]["accuracy"] for h in record.history
    )

    # The same assertion fails on the untrained model and on a constant answerer.
    text_model, tokenizer = vlm.load_text_model("tiny")
    processor = vlm.build_processor(tokenizer, vlm.TINY_RECIPE)
    untrained = vlm.build_vlm(text_model, processor, vlm.TINY_RECIPE).eval()
    test_items = vlm.build_splits(vlm.TINY_RECIPE).test
    assert not learned(vlm.evaluate_pope(untrained, processor, test_items))
    always_yes = [PopeRow("yes", i.answers[0], i.meta["sampling"]) for i in test_items]
    assert not learned(pope_scores(always_yes))


def test_tiny_vlm_reloads_from_its_cache_folder(trained) -> None:  # type: ignore[no-untyped-def]
    record, folder = trained
    assert (folder.parent.name, folder.name) == ("models", vlm.TINY_RECIPE.name)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    model, processor = vlm.load_vlm(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert vlm.read_record(folder) == record
    # Same weights, same greedy answers: the reloaded model scores what the run recorded.
    test_items = vlm.build_splits(vlm.TINY_RECIPE).test
    with vlm.torch_threads(vlm.TINY_RECIPE.threads):
        again = vlm.evaluate_pope(
            model, processor, test_items, batch_size=vlm.TINY_RECIPE.eval_batch_size
        )
    assert again["overall"].accuracy == record.test["overall"].accuracy


def test_tiny_vlm_gives_the_three_feature_families(trained) -> None:  # type: ignore[no-untyped-def]
    _, folder = trained
    model, processor = vlm.load_vlm(folder)
    items = vlm.build_splits(vlm.TINY_RECIPE).test[:5]
    features = extract_vlm_features(
        model, processor, [i.image for i in items], [i.prompt for i in items], batch_size=2
    )
    layers = vlm.TINY_TEXT["layers"] + 1  # L+1 rows: the embeddings, then each layer
    hidden = vlm.TINY_TEXT["hidden_size"]
    assert features.visual.shape == (5, vlm.TINY_RECIPE.vision_hidden)
    assert features.vision_tokens.shape == (5, layers, hidden)
    assert features.query_token.shape == (5, layers, hidden)
    assert features.notes["family"] == "llava"
    assert torch.isfinite(features.query_token).all()
