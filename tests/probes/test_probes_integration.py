"""A seeded probe sweep on the real default model over the capitals task (a few minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_capitals_sweep_on_the_default_model(tmp_path: Path) -> None:
    from engines import load_model
    from engines.base import SamplingParams
    from probes.artifact import StaleProbeError, load_probe
    from probes.data import ProbeData, collect
    from probes.evaluation import evaluate
    from probes.features import prompt_template_hash
    from probes.plots import plot_roc, plot_sweep
    from probes.runtime import RiskScorer
    from probes.sweep import sweep
    from tasks import get_task

    engine = load_model("smollm2-135m-instruct")
    data = collect(engine, get_task("capitals"))
    assert len(data) > 200
    assert data.features.arrays["query_token"].shape[1:] == (engine.num_layers + 1, 576)

    result = sweep(data, seed=0)
    assert result.chosen.val_auroc > 0.6  # measured: about 0.8 (chosen on validation)
    assert result.labels.truncated < 0.15 * len(data)
    data.save(tmp_path / "data")
    result.probe.save(tmp_path / "probe")
    plot_sweep(result, tmp_path / "sweep.png")

    probe = load_probe(
        tmp_path / "probe",
        expected_fingerprint=engine.fingerprint,
        expected_template_hash=prompt_template_hash(engine),
    )
    report = evaluate(probe, ProbeData.load(tmp_path / "data"))  # the test split, once
    assert report.n_test > 20 and {"probe", "mean_logprob", "mean_entropy"} <= set(report.methods)
    plot_roc(report, tmp_path / "roc.png")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("sweep.png", "roc.png"))

    scorer = RiskScorer(probe)
    generations = engine.generate(
        data.prompts[:3], SamplingParams(max_new_tokens=4), risk_fn=scorer
    )
    expected = scorer.score(data.features.matrix(probe.spec)[:3])
    assert [g.risk for g in generations] == pytest.approx(expected.tolist(), abs=1e-3)

    with pytest.raises(StaleProbeError, match="autodidact probe sweep"):
        load_probe(tmp_path / "probe", expected_fingerprint="another-model")


def test_probe_commands_on_the_default_model(tmp_path: Path) -> None:
    """`autodidact probe sweep | eval | score` end to end, as a user types them."""
    import json

    from typer.testing import CliRunner

    from cli.app import make_app

    runner, app = CliRunner(), make_app()
    out = str(tmp_path / "runs")
    swept = runner.invoke(
        app, ["probe", "sweep", "--task", "capitals", "--limit", "150", "--out", out]
    )
    assert swept.exit_code == 0, swept.output
    assert "chosen layer." in swept.output
    (folder,) = (tmp_path / "runs").glob("probe-capitals*")
    assert (folder / "sweep.png").stat().st_size > 0
    card = json.loads((folder / "probe" / "card.json").read_text())
    assert card["metrics"]["validation"]["auroc"] > 0.6  # measured: about 0.8

    evaluated = runner.invoke(
        app,
        ["probe", "eval", str(folder / "probe"), "--task", "capitals", "--k", "2", "--out", out],
    )
    assert evaluated.exit_code == 0, evaluated.output
    (report_dir,) = (tmp_path / "runs").glob("probe-eval*")
    report = json.loads((report_dir / "report.json").read_text())
    assert report["n_test"] > 20
    assert (report_dir / "roc.png").stat().st_size > 0
    methods = {row["method"] for row in report["methods"]}
    assert methods == {"probe", "mean_logprob", "mean_entropy", "self_consistency"}

    scored = runner.invoke(
        app, ["probe", "score", str(folder / "probe"), "What is the capital of France?"]
    )
    assert scored.exit_code == 0, scored.output
    assert 0.0 <= float(scored.output.strip().splitlines()[-1]) <= 1.0
