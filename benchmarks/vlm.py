"""HALP's three feature families on the trained shapes VLM, against the post-generation
baselines and a question-only probe, on images the model never saw.

    python -m benchmarks.vlm [--model FOLDER] [--images 500] [--seed 1] [--k 5]
                             [--out runs/bench-vlm.json]
    python -m benchmarks.vlm --report runs/bench-vlm.json     # the tables again, no model

1. A fresh `shapes` build (seed --seed; the training build is seed 0), with any image whose
   pixels equal one the model trained or was chosen on dropped.
2. The model's greedy answers (labels by POPE's yes/no reading), their mean token logprob and
   entropy, and the three families read from each answer's own prefill: `visual` (the
   vision tower's pooled output), `vision_tokens` and `query_token` (every layer).
3. The question-only baseline: the same questions with a blank canvas, query-token features.
4. One grouped split by image (60/20/20, seed 0). Per family, every layer fitted on train,
   one chosen on validation (`probes.vlm_data.sweep_families`); each probe, the baselines
   (and self-consistency over --k samples at temperature 0.7) scored once on the test rows:
   AUROC with its bootstrap 95% interval, AUPRC; per question type where a type has >= 20
   wrong test answers.
5. Cost, on the same 32 items, interleaved, median of 3: a greedy answer; the same answer
   with the three families read from its own prefill (the probe inside the answer); the
   prefill alone (the probe before the answer).

Answers and features are cached under runs/bench-vlm-cache/ (keyed by model fingerprint,
images and seed), so a re-run only re-fits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import SamplingParams
from engines.loading import cache_root
from engines.vlm import VLMEngine
from probes.data import ProbeData
from probes.evaluation import EvalReport, evaluate
from probes.labels import usable
from probes.metrics import risk_metrics
from probes.split import grouped_split
from probes.sweep import SweepResult, sweep
from probes.vlm_data import (
    answer_and_read,
    blank_like,
    collect_vlm,
    item_images,
    only_kind,
    sample_consistency_vlm,
    sweep_families,
    vlm_feature_set,
    vlm_features,
)
from tasks.base import Item, Task

DEFAULT_MODEL = cache_root() / "models" / "shapes-llava-smollm2"
DEFAULT_CACHE = Path("runs/bench-vlm-cache")
MIN_WRONG_PER_TYPE = 20  # a type's AUROC is reported only with this many wrong test answers
TRAINING_BUILD = (4148, 0)  # the default recipe's one shapes build: (images, task seed)
BASELINES = ("mean_logprob", "mean_entropy", "self_consistency")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_task(n_images: int, seed: int, image_size: int = 48) -> tuple[Task, int]:
    """A shapes build of `n_images` whose images the training build does not hold
    (pixel for pixel); returns it and how many images were dropped."""
    from tasks.shapes import build_shapes_task

    n_train, train_seed = TRAINING_BUILD
    if seed == train_seed:
        raise SystemExit(f"--seed {seed} is the training build's seed; pick another")
    seen = {
        item.image.tobytes()  # type: ignore[union-attr]
        for item in build_shapes_task(n_train, 4, train_seed, image_size).items
    }
    task = build_shapes_task(n_images, 4, seed, image_size)
    kept = [item for item in task.items if item.image.tobytes() not in seen]  # type: ignore[union-attr]
    dropped = len({i.group for i in task.items}) - len({i.group for i in kept})
    return replace(task, items=tuple(kept)), dropped


def cached(folder: Path, make: Any) -> ProbeData:
    if (folder / "data.json").is_file():
        return ProbeData.load(folder)
    data: ProbeData = make()
    data.save(folder)
    return data


def test_rows(data: ProbeData, seed: int = 0) -> np.ndarray:
    """The split's test rows with a usable label, as `evaluate` takes them."""
    split = grouped_split(data.groups, seed=seed)
    return split.test[usable(data.labels)[split.test]]  # type: ignore[no-any-return]


def question_only(engine: VLMEngine, data: ProbeData, items: Sequence[Item]) -> ProbeData:
    """The same rows, features read with a blank canvas in place of each image."""
    blanks = [blank_like(image) for image in item_images(items)]
    features = vlm_features(engine, data.prompts, blanks, progress_cb=progress("blank"))
    return replace(data, features=vlm_feature_set(features, data.item_ids, engine))


def progress(what: str) -> Any:
    def report(done: int, total: int) -> None:
        if done == total or done % 160 < 16:
            log(f"  {what}: {done}/{total}")

    return report


def probe_cost(engine: VLMEngine, items: Sequence[Item], repeats: int = 3) -> dict[str, float]:
    """Seconds per item of a greedy answer, of the same answer reading the three families
    from its own prefill, and of that prefill run alone; interleaved, median of `repeats`."""
    prompts, images = [i.prompt for i in items], item_images(items)
    runs: dict[str, list[float]] = {"answer": [], "answer_reading": [], "prefill_alone": []}
    for _ in range(repeats):
        for name, work in (
            ("answer", lambda: engine.generate(prompts, images, SamplingParams(max_new_tokens=4))),
            ("answer_reading", lambda: answer_and_read(engine, prompts, images, 4)),
            ("prefill_alone", lambda: vlm_features(engine, prompts, images)),
        ):
            started = time.perf_counter()
            work()
            runs[name].append((time.perf_counter() - started) / len(items))
    cost = {f"{name}_s": statistics.median(times) for name, times in runs.items()}
    cost["inside_share"] = cost["answer_reading_s"] / cost["answer_s"] - 1
    cost["before_share"] = cost["prefill_alone_s"] / cost["answer_s"]
    return cost


def method_rows(
    families: dict[str, tuple[SweepResult, EvalReport]], blank: tuple[SweepResult, EvalReport]
) -> list[dict[str, Any]]:
    """One row per family probe, the question-only probe and each baseline (test split)."""
    rows = []
    for name, (result, report) in {**families, "question_only": blank}.items():
        rows.append(
            {
                "method": name,
                "feature": result.chosen.spec.name,
                "val_auroc": result.validation.auroc,
                **report.methods["probe"].to_json(),
            }
        )
    _, any_report = next(iter(families.values()))
    for name in BASELINES:
        if name in any_report.methods:
            rows.append(
                {"method": name, "feature": "-", "val_auroc": None}
                | any_report.methods[name].to_json()
            )
    return rows


def by_type(
    data: ProbeData,
    kinds_of: dict[str, str],
    reports: dict[str, EvalReport],
    rows: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Per question type with >= MIN_WRONG_PER_TYPE wrong test answers: each method's AUROC."""
    types = np.array([kinds_of[data.item_ids[row]] for row in rows])
    y = next(iter(reports.values())).y
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(types)):
        mask = types == kind
        wrong = int(y[mask].sum())
        entry: dict[str, Any] = {"n": int(mask.sum()), "wrong": wrong}
        if wrong >= MIN_WRONG_PER_TYPE and wrong < mask.sum():
            scores = {name: report.scores["probe"] for name, report in reports.items()}
            scores |= {
                name: score
                for name, score in next(iter(reports.values())).scores.items()
                if name in BASELINES
            }
            entry["auroc"] = {
                name: risk_metrics(y[mask], score[mask], n_boot=1000).to_json()["auroc"]
                for name, score in scores.items()
            }
        out[kind] = entry
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    engine = VLMEngine.load(args.model)
    task, dropped = fresh_task(args.images, args.seed)
    items = list(task.items)
    key = f"{engine.fingerprint}-{args.images}-seed{args.seed}"
    log(f"{len(items)} questions on {len(items) // 4} new images ({dropped} seen ones dropped)")
    data = cached(
        args.cache / key / "answers",
        lambda: collect_vlm(engine, task, items, progress_cb=progress("answers + features")),
    )
    blank = cached(args.cache / key / "blank", lambda: question_only(engine, data, items))
    rows = test_rows(data)
    if args.k > 1:
        consistency = cached(
            args.cache / key / f"consistency-k{args.k}",
            lambda: sample_consistency_vlm(
                engine,
                data.subset(rows),
                item_images([items[i] for i in rows]),
                k=args.k,
                progress_cb=progress("self-consistency"),
            ),
        )
        data = replace(data, consistency=consistency.consistency)
        data.timing["self_consistency"] = consistency.timing["self_consistency"]
        blank = replace(blank, consistency=data.consistency)
    log("sweeping layers per family")
    results = sweep_families(data)
    families = {
        kind: (result, evaluate(result.probe, only_kind(data, kind), task=task))
        for kind, result in results.items()
    }
    blank_result = sweep(only_kind(blank, "query_token"))
    blank_report = evaluate(blank_result.probe, only_kind(blank, "query_token"), task=task)
    reports = {kind: report for kind, (_, report) in families.items()}
    reports["question_only"] = blank_report
    kinds_of = {item.id: str(item.meta.get("sampling", "all")) for item in items}
    accuracy = 1 - float(np.mean([label.wrong for label in data.labels]))
    return {
        "model": str(args.model),
        "fingerprint": engine.fingerprint,
        "images": len(items) // 4,
        "questions": len(items),
        "seed": args.seed,
        "dropped_seen_images": dropped,
        "accuracy": accuracy,
        "split_sizes": results["query_token"].split_sizes,
        "test": {"n": len(rows), "wrong": int(reports["query_token"].y.sum())},
        "methods": method_rows(families, (blank_result, blank_report)),
        "by_type": by_type(data, kinds_of, reports, rows),
        "cost": probe_cost(engine, items[:32]),
        "seconds": time.perf_counter() - started,
    }


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(result: dict[str, Any]) -> str:
    lines = [
        f"model {result['model']} ({result['fingerprint']}); {result['questions']} questions on "
        f"{result['images']} new images (seed {result['seed']}, "
        f"{result['dropped_seen_images']} seen images dropped); greedy accuracy "
        f"{result['accuracy']:.3f}; splits {result['split_sizes']}; test n={result['test']['n']}"
        f", wrong {result['test']['wrong']}",
        "",
        "| method | feature (chosen on validation) | val AUROC | test AUROC [95% CI] | AUPRC |",
        "|---|---|---|---|---|",
    ]
    for row in result["methods"]:
        lo, hi = row["auroc_ci"]
        lines.append(
            f"| {row['method']} | {row['feature']} | {_f(row['val_auroc'])} | "
            f"{row['auroc']:.3f} [{lo:.2f}, {hi:.2f}] | {row['auprc']:.3f} |"
        )
    lines += ["", "| question type | n | wrong | AUROC by method |", "|---|---|---|---|"]
    for kind, entry in result["by_type"].items():
        aurocs = entry.get("auroc")
        text = (
            ", ".join(f"{name} {value:.3f}" for name, value in aurocs.items())
            if aurocs
            else f"- (< {MIN_WRONG_PER_TYPE} wrong)"
        )
        lines.append(f"| {kind} | {entry['n']} | {entry['wrong']} | {text} |")
    cost = result["cost"]
    lines += [
        "",
        f"greedy answer {cost['answer_s'] * 1000:.1f} ms/item; the same answer reading the "
        f"probe's features from its own prefill {cost['answer_reading_s'] * 1000:.1f} ms/item "
        f"({cost['inside_share']:+.1%}); the prefill alone, before the answer, "
        f"{cost['prefill_alone_s'] * 1000:.1f} ms/item ({cost['before_share']:.0%} of an "
        f"answer). 32 items, interleaved, median of 3; {result['seconds']:.0f} s in all",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vlm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="VLM folder (make vlm)")
    parser.add_argument("--images", type=int, default=500, help="new images, 4 questions each")
    parser.add_argument("--seed", type=int, default=1, help="shapes build seed (not 0)")
    parser.add_argument("--k", type=int, default=5, help="self-consistency samples (0: skip)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-vlm.json"))
    parser.add_argument("--report", type=Path, default=None, help="print a saved result")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        print(report(json.loads(args.report.read_text())))
        return
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"no model in {args.model}: `make vlm` trains and caches it")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(report(result))


if __name__ == "__main__":
    main()
