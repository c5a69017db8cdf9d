"""`autodidact probe sweep | eval | score`: hallucination-risk probes from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import vlm as image_path
from cli.common import (
    DEFAULT_ROOT,
    ImageOption,
    Loaders,
    ModelOption,
    OutOption,
    PathOption,
    TaskOption,
    VerifierOption,
    cli_command,
    compact_table,
    console,
    fail,
    image_task,
    is_vlm,
    new_output_dir,
    positive,
    progress_bar,
    text_task,
)
from engines.loading import DEFAULT_MODEL

if TYPE_CHECKING:
    from tasks.base import Split


# Below these the sweep cannot have both labels in train and in validation to choose on.
SWEEP_MIN_SPLITS: dict[Split, int] = {"train": 4, "dev": 4}
# Below this many right and wrong answers each, a test ROC curve is undefined.
EVAL_MIN_PER_LABEL = 2


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class ProbeCommands:
    """`probe sweep | eval | score`, loading models and tasks through `loaders`."""

    def __init__(self, loaders: Loaders) -> None:
        self.loaders = loaders

    def sweep(
        self,
        task: TaskOption = "capitals",
        model: ModelOption = DEFAULT_MODEL,
        path: PathOption = None,
        verifier: VerifierOption = None,
        limit: Annotated[int | None, typer.Option(help="Use only the first N items.")] = None,
        max_new_tokens: Annotated[
            int | None, typer.Option(min=1, help="Answer budget (default: the task's).")
        ] = None,
        seed: Annotated[
            int, typer.Option(help="Seed of the grouped train/validation/test split.")
        ] = 0,
        out: OutOption = DEFAULT_ROOT,
    ) -> None:
        """Validation AUROC per layer and feature kind (table + PNG); the chosen probe saved.

        With a vision-language model's folder as --model and an image task (shapes, or a \
JSONL file with image rows), the kinds are HALP's three families: visual, vision_tokens \
and query_token; the best family's probe is saved."""
        from probes.data import collect
        from probes.labels import summarize_labels
        from probes.plots import plot_sweep
        from probes.sweep import SweepRefusedError, sweep
        from tasks import split_sizes_problem, with_verifier

        positive(limit, "--limit")
        vlm = is_vlm(model)
        suite = with_verifier(self.loaders.load_task(task, path), verifier)
        suite = image_task(suite) if vlm else text_task(suite)
        items = list(suite.items)[:limit] if limit else list(suite.items)
        problem = split_sizes_problem(
            suite.name,
            [item.group for item in items],
            seed=seed,
            minimum=SWEEP_MIN_SPLITS,
            why="a probe is fitted on train and chosen on validation, each with both labels",
            names={"dev": "validation"},
            fix="use about {n} more items (raise --limit, or a larger task)",
        )
        if problem:
            raise fail(problem)
        if vlm:
            vlm_engine = self.loaders.load_vlm_engine(model)
            return image_path.sweep(vlm_engine, suite, items, seed, out, max_new_tokens)
        engine = self.loaders.load_engine(model)
        with progress_bar(f"greedy answers on {suite.name}", len(items)) as on_progress:
            data = collect(
                engine, suite, items, max_new_tokens=max_new_tokens, progress_cb=on_progress
            )
        try:
            result = sweep(data, seed=seed)
        except SweepRefusedError as error:
            raise fail(f"{error} (labels: {summarize_labels(data.labels).describe()})") from None
        folder = new_output_dir(out, f"probe-{suite.name.replace(':', '-')}")
        data.save(folder / "data")
        result.probe.save(folder / "probe")
        plot_sweep(result, folder / "sweep.png")
        (folder / "sweep.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        table = compact_table(
            f"probe sweep on {suite.name}", "feature", "estimator", "val AUROC", "chosen"
        )
        for row in result.table():
            table.add_row(
                str(row.get("feature")),
                str(row.get("estimator")),
                _fmt(row.get("val_auroc")),
                "*" if row["chosen"] else "",
            )
        console.print(table)
        labels = result.labels
        console.print(
            f"chosen {result.chosen.spec.name}: validation AUROC {result.validation.auroc:.3f} "
            f"(95% CI {result.validation.auroc_ci[0]:.2f}-{result.validation.auroc_ci[1]:.2f}); "
            f"labels: {labels.describe()}",
            highlight=False,
        )
        console.print(f"probe: {folder / 'probe'}\nplot: {folder / 'sweep.png'}")

    def eval(
        self,
        probe: Annotated[Path, typer.Argument(help="Probe folder (from `probe sweep`).")],
        task: TaskOption = "capitals",
        model: ModelOption = DEFAULT_MODEL,
        path: PathOption = None,
        verifier: VerifierOption = None,
        k: Annotated[
            int, typer.Option(help="Samples for the self-consistency baseline (0: skip it).")
        ] = 5,
        out: OutOption = DEFAULT_ROOT,
    ) -> None:
        """Test-split metrics with 95% CIs, the baselines beside them, and a ROC curve PNG.

        Columns: AUROC (with its 95% bootstrap CI) and AUPRC of each risk score against \
the wrong answers; AURC, the area under the risk-coverage curve (answer the lowest-risk \
items first: the error rate among those answered, averaged over every coverage; lower is \
better); acc@50% and acc@80%, the accuracy on the 50% and 80% of items with the lowest \
risk (abstaining on the rest); ECE, the probe's calibration error; s/item, seconds each score costs per item."""
        from probes.artifact import check_fingerprint as check_card
        from probes.artifact import load_probe
        from probes.data import collect, sample_consistency
        from probes.evaluation import evaluate, held_out_items
        from probes.plots import plot_roc
        from tasks import with_verifier

        vlm = is_vlm(model)
        suite = with_verifier(self.loaders.load_task(task, path), verifier)
        suite = image_task(suite) if vlm else text_task(suite)
        fitted = load_probe(probe)  # a wrong folder is refused before the model loads
        items = held_out_items(suite, fitted)
        if not items:
            raise typer.BadParameter(f"task {suite.name!r} has no items in the probe's test split")

        def check_fingerprint(fingerprint: str) -> None:
            check_card(fitted.card, fingerprint, where=f"probe {probe}")

        if vlm:
            vlm_engine = self.loaders.load_vlm_engine(model)
            check_fingerprint(vlm_engine.fingerprint)
            data = image_path.eval_data(vlm_engine, suite, items, fitted.card.max_new_tokens, k)
        else:
            engine = self.loaders.load_engine(model)
            check_fingerprint(engine.fingerprint)
            with progress_bar("greedy answers (test split)", len(items)) as on_progress:
                data = collect(
                    engine,
                    suite,
                    items,
                    max_new_tokens=fitted.card.max_new_tokens,
                    progress_cb=on_progress,
                )
            if k > 0:
                with progress_bar(f"self-consistency, {k} samples", len(items)) as on_progress:
                    data = sample_consistency(engine, data, k=k, progress_cb=on_progress)
        check_eval_labels(suite.name, data.labels)
        report = evaluate(fitted, data, task=suite)
        folder = new_output_dir(out, "probe-eval")
        plot_roc(report, folder / "roc.png")
        (folder / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=str))
        print_report_table(report)
        console.print(f"report: {folder / 'report.json'}\nROC: {folder / 'roc.png'}")

    def score(
        self,
        probe: Annotated[Path, typer.Argument(help="Probe folder.")],
        question: Annotated[
            str, typer.Argument(help="The question to score (nothing is generated).")
        ],
        model: ModelOption = DEFAULT_MODEL,
        image: ImageOption = None,
    ) -> None:
        """The hallucination risk of a question, from one prefill, before any token (of a
        question about --image, with a vision-language model's folder as --model)."""
        from probes.artifact import load_probe
        from probes.evaluation import score_prompts

        vlm = is_vlm(model)
        image_path.check_image_option(vlm, image, model)
        picture = image_path.open_image(image) if image is not None else None
        fitted = load_probe(probe)  # a wrong folder is refused before the model loads
        if vlm and picture is not None:
            risk = image_path.risk(self.loaders.load_vlm_engine(model), fitted, question, picture)
        else:
            (risk,) = score_prompts(self.loaders.load_engine(model), fitted, [question])
        console.print(f"{risk:.3f}")


def check_eval_labels(task: str, labels: Any) -> None:
    """Exit 2 (nothing written) when the test split's usable labels cannot make a ROC."""
    from probes.labels import summarize_labels

    summary = summarize_labels(labels)
    wrong = sum(label.wrong for label in labels if not label.truncated)
    right = summary.included - wrong
    if min(right, wrong) < EVAL_MIN_PER_LABEL:
        raise fail(
            f"the probe's test split of task {task!r} has {right} right and {wrong} wrong "
            f"answers ({summary.describe()}): a ROC needs >= {EVAL_MIN_PER_LABEL} of each; "
            "evaluate on a task with more items"
        )


def print_report_table(report: Any) -> None:
    """`probe eval`'s table, 80 columns wide: the probe and each baseline, one row each."""
    table = compact_table(
        f"test split, n={report.n_test}",
        *("method", "AUROC", "95% CI", "AUPRC", "AURC", "acc@50%", "acc@80%", "ECE", "s/item"),
        wrap=("method",),
    )
    for row in report.table():
        ci: tuple[float, float] = row["auroc_ci"]
        table.add_row(
            str(row["method"]).replace("_", " "),
            _fmt(row["auroc"]),
            f"{ci[0]:.2f}-{ci[1]:.2f}",
            _fmt(row["auprc"]),
            _fmt(row["aurc"]),
            _fmt(row["accuracy_at_50"]),
            _fmt(row["accuracy_at_80"]),
            _fmt(row["ece"]) if row["ece"] is not None else "-",
            _seconds(row["cost_s_per_item"]),
        )
    console.print(table)


def _seconds(value: object) -> str:
    """A cost per item to 3 significant figures (a probe's is a fraction of a millisecond).

    >>> _seconds(0.000178), _seconds(1.0412), _seconds(None)
    ('0.000178', '1.04', '-')
    """
    return f"{value:.3g}" if isinstance(value, float) else "-"


def probe_app(loaders: Loaders) -> typer.Typer:
    app = typer.Typer(
        help="Fit, evaluate and apply hallucination-risk probes.", no_args_is_help=True
    )
    commands = ProbeCommands(loaders)
    for name, fn in (("sweep", commands.sweep), ("eval", commands.eval), ("score", commands.score)):
        app.command(name)(cli_command(fn))
    return app
