"""Figures of a sweep (AUROC per layer) and of a test evaluation (ROC curves)."""

from __future__ import annotations

from pathlib import Path

from probes.evaluation import EvalReport
from probes.metrics import roc_curve_points
from probes.sweep import SweepResult


def plot_sweep(result: SweepResult, png_path: str | Path) -> Path:
    """Validation (solid) and train (dotted) AUROC per layer, one line per feature kind and
    estimator; the chosen candidate starred."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.subplots()
    series = sorted({(row.spec.kind, row.estimator.label) for row in result.rows})
    for kind, label in series:
        single = [
            r
            for r in result.rows
            if len(r.spec.layers) == 1 and (r.spec.kind, r.estimator.label) == (kind, label)
        ]
        layers = [r.spec.layers[0] for r in single]
        (line,) = axes.plot(
            layers, [r.val_auroc for r in single], marker=".", label=f"{kind} {label}"
        )
        axes.plot(
            layers,
            [r.train_auroc for r in single],
            linestyle=":",
            color=line.get_color(),
            alpha=0.6,
        )
    chosen = result.chosen
    axes.plot(
        chosen.spec.layers[-1],
        chosen.val_auroc,
        marker="*",
        markersize=16,
        color="black",
        linestyle="none",
        label=f"chosen: {chosen.spec.name} {chosen.estimator.label} ({chosen.val_auroc:.3f})",
    )
    axes.axhline(0.5, color="grey", linewidth=0.8)
    axes.set(xlabel="layer (0 = embeddings)", ylabel="AUROC (validation solid, train dotted)")
    axes.set_title(f"probe sweep, validation n={result.split_sizes['validation']}")
    axes.legend(fontsize=8)
    figure.savefig(png_path, dpi=120)
    return Path(png_path)


def plot_roc(report: EvalReport, png_path: str | Path) -> Path:
    """Test ROC curve of the probe and each baseline, AUROC with its 95% CI in the legend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axes = figure.subplots()
    for name, risk in report.scores.items():
        fpr, tpr = roc_curve_points(report.y, risk)
        metrics = report.methods[name]
        low, high = metrics.auroc_ci
        axes.plot(fpr, tpr, label=f"{name} {metrics.auroc:.3f} [{low:.2f}, {high:.2f}]")
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    axes.set(xlabel="false positive rate", ylabel="true positive rate (wrong answers caught)")
    axes.set_title(f"test ROC, n={report.n_test}, probe {report.feature}")
    axes.legend(fontsize=8, loc="lower right")
    figure.savefig(png_path, dpi=120)
    return Path(png_path)
