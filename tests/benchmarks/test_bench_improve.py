"""The headline improvement benchmark's results file (`benchmarks.improve`, no --compare):
records merge by (preset, seed) across invocations, a finished seed is not run again, the
file names its kind so `--report` tells it from a comparison file, and the report prints
every cell of the session table per seed beside the mean and its 95% t-interval. No model:
sessions are scripted."""

from __future__ import annotations

import argparse
import doctest
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import compare_report, improve
from benchmarks.compare_report import (
    COMPARE,
    IMPROVE,
    IMPROVE_SCHEMA_VERSION,
    SettingsConflict,
    file_report_lines,
    headline_report_lines,
    pending,
    read_runs,
    save_run,
    write_runs,
)

# seed -> (initial acc, final acc, initial halluc., final halluc., wall s, compute s, truncated)
SEEDS = {
    0: (0.165, 0.495, 0.835, 0.505, 720.0, (488.0, 4.0, 218.0), (13, 0)),
    1: (0.175, 0.455, 0.825, 0.545, 660.0, (450.0, 4.0, 196.0), (9, 1)),
    2: (0.155, 0.535, 0.845, 0.465, 780.0, (520.0, 5.0, 245.0), (11, 0)),
}


def session(seed: int) -> dict[str, Any]:
    """What `run_headline` returns for one seed."""
    initial, final, h0, h1, wall, (gen, prefill, train), (t0, t1) = SEEDS[seed]
    return {
        "task": "arithmetic",
        "model": "tiny",
        "session_id": f"arithmetic-{seed}",
        "folder": f"runs/bench-improve/default-{seed}/sessions/arithmetic-{seed}",
        "wall_seconds": wall,
        "compute_seconds": {"generate": gen, "hidden_states": prefill, "train": train},
        "initial": {
            "version": "v0",
            "test_accuracy": initial,
            "n_test": 103,
            "test_hallucination_rate": h0,
            "test_truncated": t0,
        },
        "final": {
            "version": "v2",
            "test_accuracy": final,
            "n_test": 103,
            "test_hallucination_rate": h1,
            "test_truncated": t1,
        },
        "cycles": [
            {
                "cycle": 0,
                "version": "v0",
                "accuracy": 0.177,
                "hallucination_rate": 0.823,
                "mean_risk": 0.781,
                "probe_auroc": 0.514,
                "decision": None,
            },
            {
                "cycle": 1,
                "version": "v1",
                "accuracy": 0.365,
                "hallucination_rate": 0.635,
                "mean_risk": None,
                "probe_auroc": 0.418,
                "decision": "refit_probe",
            },
            {
                "cycle": 2,
                "version": "v2",
                "accuracy": 0.479 + 0.01 * seed,
                "hallucination_rate": 0.521,
                "mean_risk": 0.782,
                "probe_auroc": 0.697,
                "decision": "stop",
            },
        ],
        "decisions": [
            {"cycle": 1, "action": "refit_probe", "reason": f"probe stale (seed {seed})"},
            {"cycle": 2, "action": "stop", "reason": "another cycle would overrun"},
        ],
    }


@pytest.fixture(autouse=True)
def no_real_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that reaches a real session fails at once, instead of loading the model."""

    def refuse(*args: Any) -> dict[str, Any]:
        raise AssertionError(f"a real session was started: {args}")

    monkeypatch.setattr(improve, "run_headline", refuse)


def record(seed: int, sets: list[str] | None = None) -> dict[str, Any]:
    return {"preset": "default", "seed": seed, "sets": sets or [f"seed={seed}"], **session(seed)}


# -- merging and resuming ------------------------------------------------------------------


def test_records_merge_into_one_file_by_preset_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "improve.json"
    save_run(out, record(2), IMPROVE)
    save_run(out, record(0), IMPROVE)
    save_run(out, record(0) | {"wall_seconds": 1.0}, IMPROVE)  # the same key again
    save_run(out, record(0) | {"preset": "quick"}, IMPROVE)  # another preset, kept apart
    runs = read_runs(out, IMPROVE)
    assert [(r["preset"], r["seed"], r["wall_seconds"]) for r in runs] == [
        ("default", 0, 1.0),
        ("default", 2, 780.0),
        ("quick", 0, 720.0),
    ]
    data = json.loads(out.read_text())
    assert (data["kind"], data["schema_version"]) == ("improve", IMPROVE_SCHEMA_VERSION)
    assert [p.name for p in tmp_path.iterdir()] == ["improve.json"]  # no temp file left


def test_a_finished_seed_is_skipped_an_unfinished_one_runs_again() -> None:
    cut = {"preset": "default", "seed": 1, "sets": ["seed=1"]}  # no final scores
    plan = [(("default", s), [f"seed={s}"]) for s in (0, 1, 2)]
    todo = pending(plan, [record(0), cut], IMPROVE)
    assert [key for key, _ in todo] == [("default", 1), ("default", 2)]


def test_a_finished_seed_made_with_other_settings_is_refused() -> None:
    with pytest.raises(SettingsConflict, match="preset default seed 0 run with other settings"):
        pending([(("default", 0), ["seed=0", "monitor.max_cycles=3"])], [record(0)], IMPROVE)


def invoke(tmp_path: Path, out: Path, *seeds: int, sets: list[str] | None = None) -> None:
    args = argparse.Namespace(
        preset="default", seeds=list(seeds), sets=sets or [], root=tmp_path, out=out
    )
    improve.headline(args)


def test_headline_runs_only_the_seeds_the_file_lacks_and_reports_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[tuple[str, list[str], Path]] = []

    def fake_run(preset: str, sets: list[str], root: Path) -> dict[str, Any]:
        ran.append((preset, list(sets), root))
        return session(int(sets[0].removeprefix("seed=")))

    monkeypatch.setattr(improve, "run_headline", fake_run)
    out = tmp_path / "improve.json"
    invoke(tmp_path, out, 0, 1)
    invoke(tmp_path, out, 2)
    assert [(sets, root.name) for _, sets, root in ran] == [
        (["seed=0"], "default-0"),
        (["seed=1"], "default-1"),
        (["seed=2"], "default-2"),
    ]
    invoke(tmp_path, out, 0, 1, 2)  # a restart of everything: nothing left to run
    assert len(ran) == 3
    printed = capsys.readouterr().out
    assert "3 of 3 sessions already in" in printed
    assert "(seeds 0, 1, 2)" in printed  # the table of the whole file, after each invocation
    with pytest.raises(SystemExit, match="other settings"):
        invoke(tmp_path, out, 1, sets=["monitor.max_cycles=3"])
    assert len(ran) == 3


# -- telling the two kinds of file apart ---------------------------------------------------


def test_each_mode_refuses_the_other_modes_file(tmp_path: Path) -> None:
    headline_file, compare_file = tmp_path / "improve.json", tmp_path / "compare.json"
    write_runs(headline_file, [record(0)], IMPROVE)
    write_runs(compare_file, [], COMPARE)
    with pytest.raises(ValueError, match="holds improve sessions, not compare ones"):
        read_runs(headline_file, COMPARE)
    with pytest.raises(ValueError, match="holds compare sessions, not improve ones"):
        read_runs(compare_file, IMPROVE)
    with pytest.raises(SystemExit, match="holds compare sessions"):
        invoke(tmp_path, compare_file, 0)


def test_report_follows_the_kind_the_file_names_not_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "improve.json"
    write_runs(path, [record(0)], IMPROVE)
    assert any(x.startswith("### Improvement session") for x in file_report_lines(path))
    data = json.loads(path.read_text())
    data["kind"] = "compare"  # the same records, named a comparison: a comparison's report
    path.write_text(json.dumps(data | {"schema_version": COMPARE.schema_version}))
    assert not any(x.startswith("### Improvement session") for x in file_report_lines(path))
    path.write_text(json.dumps(data | {"kind": "other"}))
    with pytest.raises(ValueError, match="known kind and schema version"):
        file_report_lines(path)
    path.write_text(json.dumps(data | {"kind": "improve", "schema_version": 99}))
    with pytest.raises(ValueError, match="known kind and schema version"):
        file_report_lines(path)


def test_main_resolves_out_per_mode_and_refuses_a_seed_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, argparse.Namespace] = {}
    monkeypatch.setattr(improve, "headline", lambda args: seen.__setitem__("headline", args))
    monkeypatch.setattr(improve, "compare", lambda args, kind: seen.__setitem__(kind.name, args))
    monkeypatch.setattr(improve, "time_model_compute", lambda: None)

    def main(*argv: str) -> None:
        monkeypatch.setattr(sys, "argv", ["improve", *argv])
        improve.main()

    main()
    main("--compare")
    assert seen["headline"].out == Path("runs/bench-improve.json")
    assert seen["headline"].seeds == [0, 1, 2]
    assert seen["compare"].out == Path("runs/bench-compare.json")
    main("--methods", "--seeds", "0", "--arms", "sft", "grpo")
    assert seen["methods"].out == Path("runs/bench-methods.json")
    assert seen["methods"].arms == ["sft", "grpo"]
    with pytest.raises(SystemExit):
        main("--methods", "--compare")
    main("--seeds", "0", "--out", "elsewhere.json")
    assert (seen["headline"].seeds, seen["headline"].out) == ([0], Path("elsewhere.json"))
    with pytest.raises(SystemExit):
        main("--set", "seed=3")


def test_main_report_prints_a_headline_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "improve.json"
    write_runs(path, [record(0)], IMPROVE)
    monkeypatch.setattr(sys, "argv", ["improve", "--report", str(path)])
    improve.main()
    assert "| test accuracy, final model | 49.5% (v2) | 49.5% (n=1) |" in capsys.readouterr().out


# -- the report ----------------------------------------------------------------------------


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[str]:
    path = tmp_path / "improve.json"
    cut = {"preset": "default", "seed": 3, "sets": ["seed=3"]}  # cut short: left out
    write_runs(path, [record(2), cut, record(0), record(1)], IMPROVE)
    return file_report_lines(path)


def row(lines: list[str], name: str) -> str:
    return next(x for x in lines if x.startswith(f"| {name} |"))


def test_report_has_one_column_per_seed_and_the_mean(three_seeds: list[str]) -> None:
    assert (
        "### Improvement session: preset default, task arithmetic, model tiny (seeds 0, 1, 2)"
        in three_seeds
    )
    assert "| measure | seed 0 | seed 1 | seed 2 | mean, 95% t-interval |" in three_seeds
    assert not any("different settings" in x for x in three_seeds)


@pytest.mark.parametrize(
    "name, cells",
    [
        # t(0.975, 2) = 4.303: half-width = 4.303 x sd / sqrt(3)
        ("wall time (target <= 12 min)", "12.0 min | 11.0 min | 13.0 min | 12.0 min +- 2.5 (n=3)"),
        (
            "test accuracy, initial model",
            "16.5% (n=103) | 17.5% (n=103) | 15.5% (n=103) | 16.5% +- 2.5 (n=3)",
        ),
        ("test accuracy, final model", "49.5% (v2) | 45.5% (v2) | 53.5% (v2) | 49.5% +- 9.9 (n=3)"),
        (
            "gain, paired by seed (target >= +30 points)",
            "+33.0 points | +28.0 points | +38.0 points | 33.0 points +- 12.4 (n=3)",
        ),
        ("hallucination rate, initial model", "83.5% | 82.5% | 84.5% | 83.5% +- 2.5 (n=3)"),
        ("hallucination rate, final model", "50.5% | 54.5% | 46.5% | 50.5% +- 9.9 (n=3)"),
        ("truncated test answers, initial -> final", "13 -> 0 | 9 -> 1 | 11 -> 0 | "),
        (
            "model compute: generate / prefill / train",
            "488 s / 4 s / 218 s | 450 s / 4 s / 196 s | 520 s / 5 s / 245 s | ",
        ),
        (
            "share of wall time outside model compute (target <= 3%)",
            "1.4% | 1.5% | 1.3% | 1.4% +- 0.3 (n=3)",
        ),
    ],
)
def test_report_cells_per_seed_and_mean_with_interval(
    three_seeds: list[str], name: str, cells: str
) -> None:
    assert row(three_seeds, name) == f"| {name} | {cells} |"


def test_report_has_each_seeds_cycles_and_decisions(three_seeds: list[str]) -> None:
    text = "\n".join(three_seeds)
    for seed in (0, 1, 2):
        section = text.split(f"#### seed {seed}: session arithmetic-{seed} ")[1].split("####")[0]
        assert "| 0 | v0 | 17.7% | 82.3% | 0.781 | 0.514 |  |" in section
        assert "| 1 | v1 | 36.5% | 63.5% | - | 0.418 | refit_probe |" in section
        assert f"| 2 | v2 | {47.9 + seed:.1f}% | 52.1% | 0.782 | 0.697 | stop |" in section
        assert f"- cycle 1: refit_probe: probe stale (seed {seed})" in section
        assert "- cycle 2: stop: another cycle would overrun" in section
    assert "seed 3" not in text


def test_report_says_when_seeds_ran_with_other_settings() -> None:
    runs = [record(0), record(1, ["seed=1", "monitor.max_cycles=3"])]
    lines = headline_report_lines(runs)
    warning = next(x for x in lines if "different settings" in x)
    assert "seed 0 []; seed 1 ['monitor.max_cycles=3']" in warning


def test_the_reports_doctests_pass() -> None:
    # benchmarks/ is outside pytest's doctest paths: its examples are run here
    assert doctest.testmod(compare_report).failed == 0


# -- the honesty benchmark's file: the same merge, its own kind ---------------------------


def honesty_seed(seed: int) -> dict[str, Any]:
    return {"seed": seed, "wall_seconds": 600.0, "test": {"a": [], "b": [], "c": [], "d": []}}


def test_honesty_seeds_merge_by_preset_and_seed_and_skip_finished_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import honesty

    ran: list[int] = []

    def fake_run(seed: int, sets: list[str], root: Path, preset: str) -> dict[str, Any]:
        ran.append(seed)
        return honesty_seed(seed)

    monkeypatch.setattr(honesty, "run_seed", fake_run)
    monkeypatch.setattr(honesty, "print_report", lambda results, n_boot: None)
    out = tmp_path / "honesty.json"

    def invoke(*seeds: int, sets: tuple[str, ...] = ()) -> None:
        argv = ["honesty", "--out", str(out), "--root", str(tmp_path), "--seeds"]
        monkeypatch.setattr(sys, "argv", [*argv, *map(str, seeds), *(f"--set={s}" for s in sets)])
        honesty.main()

    invoke(0, 1)
    invoke(1, 2)
    assert ran == [0, 1, 2]
    assert "1 of 2 seeds already in" in capsys.readouterr().out
    assert [r["seed"] for r in read_runs(out, compare_report.HONESTY)] == [0, 1, 2]
    with pytest.raises(SystemExit, match="other settings"):
        invoke(0, sets=("monitor.max_cycles=3",))
    with pytest.raises(SystemExit, match="holds honesty"):
        improve_report(out)
    assert ran == [0, 1, 2]


def improve_report(path: Path) -> None:
    try:
        file_report_lines(path)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def test_honesty_report_pools_only_the_seeds_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Development seeds and held-out seeds share one file; `--report --seeds` pools the
    held-out ones alone, and names the seeds the file holds when one asked for is not."""
    from benchmarks import honesty

    out = tmp_path / "honesty.json"
    for seed in (0, 3, 4):
        save_run(
            out, {"preset": "honesty", "sets": [], **honesty_seed(seed)}, compare_report.HONESTY
        )
    reported: list[list[int]] = []
    monkeypatch.setattr(
        honesty,
        "print_report",
        lambda results, n_boot: reported.append([r["seed"] for r in results["seeds"]]),
    )

    def report(*seeds: str) -> None:
        monkeypatch.setattr(sys, "argv", ["honesty", "--report", str(out), *seeds])
        honesty.main()

    report()
    report("--seeds", "4", "3")
    assert reported == [[0, 3, 4], [3, 4]]
    with pytest.raises(SystemExit, match=r"no seed \[5\] \(it holds seeds \[0, 3, 4\]\)"):
        report("--seeds", "3", "5")


def test_honesty_reads_a_file_written_before_it_named_its_kind(tmp_path: Path) -> None:
    from benchmarks import honesty

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"preset": "honesty", "sets": [], "seeds": [honesty_seed(3)]}))
    assert [(r["preset"], r["seed"]) for r in honesty.read_seeds(old)] == [("honesty", 3)]
