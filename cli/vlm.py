"""The commands' vision-language path: `probe sweep | eval | score`, `eval` and `answer`
when `--model` is a VLM folder (one whose config has a vision tower, as `make vlm` saves).

The data, the split, the probe artifact and the report are the text path's (`ProbeData`,
`grouped_split`, `Probe`, `evaluate`): only how answers and features are read differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    compact_table,
    console,
    fail,
    new_output_dir,
    progress_bar,
    write_jsonl,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from agents.refine import Refined
    from engines.vlm import VLMEngine
    from probes.artifact import Probe
    from probes.calibration import Thresholds
    from probes.data import ProbeData
    from probes.vlm import VLMFeatures
    from tasks.base import Item, Task


def check_image_option(vlm: bool, image: Path | None, model: str) -> None:
    """A question about an image needs a VLM, and a VLM needs the image: one line if not."""
    if vlm and image is None:
        raise fail(f"{model} is a vision-language model: pass the question's --image PATH")
    if image is not None and not vlm:
        raise fail(
            f"--image needs a vision-language model's folder as --model ({model} is not one; "
            "`make vlm` trains one)"
        )


def open_image(path: Path) -> Image:
    """The image file as RGB; one line (exit 2) when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise fail(f"--image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as error:
        raise fail(f"--image {path}: not an image ({error})") from None


def collect(engine: VLMEngine, task: Task, items: list[Item], what: str, **kw: Any) -> ProbeData:
    from probes.vlm_data import collect_vlm

    with progress_bar(f"{what} on {task.name}", len(items)) as on_progress:
        return collect_vlm(engine, task, items, progress_cb=on_progress, **kw)


def sweep(
    engine: VLMEngine,
    task: Task,
    items: list[Item],
    seed: int,
    out: Path,
    max_new_tokens: int | None = None,
) -> None:
    """Every layer of each family fitted on train, chosen on validation; the best family's
    probe saved with the data, the table printed."""
    from probes.plots import plot_sweep
    from probes.sweep import SweepRefusedError
    from probes.vlm_data import best_family, sweep_families

    data = collect(
        engine, task, items, "greedy answers and features", max_new_tokens=max_new_tokens
    )
    try:
        results = sweep_families(data, seed=seed)
    except SweepRefusedError as error:
        raise fail(str(error)) from None
    chosen = best_family(results)
    folder = new_output_dir(out, f"probe-{task.name.replace(':', '-')}")
    data.save(folder / "data")
    chosen.probe.save(folder / "probe")
    plot_sweep(chosen, folder / "sweep.png")
    summary = {kind: result.to_json() for kind, result in results.items()}
    (folder / "sweep.json").write_text(json.dumps(summary, indent=2, default=str))
    table = compact_table(f"probe sweep on {task.name}", "family", "layer", "val AUROC", "chosen")
    for kind, result in results.items():
        table.add_row(
            kind,
            result.chosen.spec.name,
            f"{result.validation.auroc:.3f}",
            "*" if result is chosen else "",
        )
    console.print(table)
    ci = chosen.validation.auroc_ci
    console.print(
        f"chosen {chosen.chosen.spec.name}: validation AUROC {chosen.validation.auroc:.3f} "
        f"(95% CI {ci[0]:.2f}-{ci[1]:.2f}); labels: {chosen.labels.describe()}",
        highlight=False,
    )
    console.print(f"probe: {folder / 'probe'}\nplot: {folder / 'sweep.png'}")


def eval_data(
    engine: VLMEngine, task: Task, items: list[Item], max_new_tokens: int | None, k: int
) -> ProbeData:
    """Greedy answers and features of the probe's test items, and k samples each (k > 0)."""
    from probes.vlm_data import item_images, sample_consistency_vlm

    data = collect(
        engine, task, items, "greedy answers (test split)", max_new_tokens=max_new_tokens
    )
    if k > 0:
        with progress_bar(f"self-consistency, {k} samples", len(items)) as on_progress:
            data = sample_consistency_vlm(
                engine, data, item_images(items), k=k, progress_cb=on_progress
            )
    return data


def check_probe(engine: VLMEngine, fitted: Probe) -> None:
    """The probe was fitted on this model's weights and prompt template (else one line)."""
    from probes.artifact import check_fingerprint, check_template
    from probes.features import prompt_template_hash

    check_fingerprint(fitted.card, engine.fingerprint, where="probe")
    check_template(fitted.card, prompt_template_hash(engine), where="probe")


def risk(engine: VLMEngine, fitted: Probe, question: str, image: Image) -> float:
    """The probe's risk for one (question, image), from one prefill, before any token."""
    from probes.vlm_data import vlm_features

    check_probe(engine, fitted)
    return risk_of(engine, fitted, vlm_features(engine, [question], [image]))


def risk_of(engine: VLMEngine, fitted: Probe, features: VLMFeatures) -> float:
    """The probe's risk from one question's features."""
    from probes.runtime import RiskScorer
    from probes.vlm_data import vlm_feature_set

    matrix = vlm_feature_set(features, ["q"], engine).matrix(fitted.spec)
    return float(RiskScorer(fitted).score(matrix)[0])


def greedy_eval(
    engine: VLMEngine, task: Task, items: list[Item], max_new_tokens: int, out: Path
) -> None:
    """Greedy answers to an image task: accuracy with its 95% interval overall, and POPE's
    accuracy, F1 and yes-ratio per question type when the items name one."""
    from agents.evaluate import Proportion
    from agents.vlm_training import pope_rows, pope_scores
    from engines.base import SamplingParams
    from probes.labels import label_generations
    from probes.vlm_data import item_images

    with progress_bar(f"eval {task.name}", len(items)) as on_progress:
        generations = engine.generate(
            [item.prompt for item in items],
            item_images(items),
            SamplingParams(max_new_tokens=max_new_tokens),
            on_progress=on_progress,
        )
    labels = label_generations(task, items, generations)
    folder = new_output_dir(out, f"eval-{task.name.replace(':', '-')}")
    write_jsonl(
        folder / "answers.jsonl",
        [
            {"id": item.id, "answer": label.answer, "correct": not label.wrong,
             "finish_reason": label.finish_reason}
            for item, label in zip(items, labels, strict=True)
        ],
    )  # fmt: skip
    accuracy = Proportion.of(sum(not label.wrong for label in labels), len(labels))
    summary: dict[str, Any] = {
        "task": task.name,
        "model": engine.name,
        "fingerprint": engine.fingerprint,
        "accuracy": vars(accuracy),
    }
    if all("sampling" in item.meta for item in items):
        scores = pope_scores(pope_rows(items, [label.answer for label in labels]))
        summary["pope"] = {name: score.model_dump() for name, score in scores.items()}
        table = compact_table("POPE by question type", "type", "n", "accuracy", "F1", "yes-ratio")
        for name, score in scores.items():
            f1 = "-" if score.f1 is None else f"{score.f1:.3f}"
            table.add_row(name, str(score.n), f"{score.accuracy:.3f}", f1, f"{score.yes_ratio:.3f}")
        console.print(table)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"accuracy {accuracy.text()}; answers in {folder}/answers.jsonl", highlight=False)


def answer(
    engine: VLMEngine,
    question: str,
    image: Image,
    *,
    fitted: Probe | None,
    strategy: str,
    thresholds: Thresholds,
    k: int,
    temperature: float,
    max_new_tokens: int,
) -> Refined:
    """One question about one image along the gate's route (`agents.refine.route_for`).
    With a probe, the greedy answer is generated first and the probe reads its risk from
    that answer's own prefill (one forward, before any token is chosen); the route then
    keeps it, replaces it by k samples voted or ranked, or abstains."""
    from agents.refine import ABSTAIN_TEXT, Refined, best_of_n, majority, route_for
    from engines.base import SamplingParams
    from probes.vlm_data import answer_and_read

    score, greedy = None, None
    if fitted is not None:
        check_probe(engine, fitted)
        (greedy,), features = answer_and_read(engine, [question], [image], max_new_tokens)
        score = risk_of(engine, fitted, features)
    route = route_for(strategy, score, thresholds, has_fallback=False)  # type: ignore[arg-type]
    if route == "abstain":
        return Refined(ABSTAIN_TEXT, route, score)
    if route in ("self_consistency", "best_of_n"):
        params = SamplingParams(n=k, temperature=temperature, max_new_tokens=max_new_tokens)
        (drawn,) = engine.generate([question], [image], params)
        chosen = (
            majority(drawn.samples) if route == "self_consistency" else best_of_n(drawn.samples)
        )
        return Refined(chosen.text, route, score, chosen.finish_reason)
    if greedy is None:
        (greedy,) = engine.generate(
            [question], [image], SamplingParams(max_new_tokens=max_new_tokens)
        )
    sample = greedy.samples[0]
    return Refined(sample.text, "greedy", score, sample.finish_reason)
