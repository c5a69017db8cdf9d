"""The acquisition comparison's results file (`benchmarks.improve --compare`): records merge
by (task, arm, seed) across invocations, a finished one is not run again, and the report
prints every cell the README quotes. No model: sessions are scripted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import improve
from benchmarks.compare_report import (
    COMPARE_SCHEMA_VERSION,
    SettingsConflict,
    file_report_lines,
    merge_runs,
    pending,
    read_runs,
    report_lines,
    save_run,
    write_runs,
)


def cycle(n: int, *, auroc: float, logprob: float, scoring: float) -> dict[str, Any]:
    return {
        "cycle": n,
        "accuracy": 0.3 + 0.05 * n,
        "predicted_accuracy": 0.1 * n,
        "probe_auroc": auroc,
        "stale_probe_auroc": 0.5,
        "logprob_auroc": logprob,
        "entropy_auroc": 0.6,
        "probe_ece": 0.2,
        "train_examples": 12,
        "scoring_seconds": scoring,
        "sampling_seconds": 100.0,
    }


def record(task: str, arm: str, seed: int, final: float, auroc2: float, **extra: Any) -> dict:
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "sets": [f"seed={seed}", arm],
        "session_id": f"{task}-{seed}-{arm}",
        "folder": f"runs/{task}-{seed}-{arm}/sessions/x",
        "wall_seconds": 600.0 + 60 * seed,
        "initial_test_accuracy": 0.2,
        "test_accuracy": final,
        "n_test": 60,
        "cycles": [
            cycle(1, auroc=0.55, logprob=0.63, scoring=0.4 if arm == "guided" else 0.0),
            cycle(2, auroc=auroc2, logprob=0.79, scoring=9.0 if arm == "guided" else 0.0),
        ],
        "samples": [
            {"cycle": 1, "tokens": 5000, "wasted": 0.7, "right_prompts": 3},
            {"cycle": 2, "tokens": 5000 + 100 * seed, "wasted": 0.6, "right_prompts": 8},
        ],
        **extra,
    }


# -- merging and resuming ------------------------------------------------------------------


def test_two_invocations_merge_into_one_file_by_task_arm_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    save_run(out, record("arithmetic", "uniform", 0, 0.40, 0.47))
    save_run(out, record("arithmetic", "guided", 0, 0.38, 0.58))
    save_run(out, record("arithmetic", "uniform", 2, 0.35, 0.47))  # a second invocation
    save_run(out, record("arithmetic", "uniform", 0, 0.45, 0.47))  # the same key again
    runs = read_runs(out)
    assert [(r["arm"], r["seed"], r["test_accuracy"]) for r in runs] == [
        ("uniform", 0, 0.45),
        ("guided", 0, 0.38),
        ("uniform", 2, 0.35),
    ]
    data = json.loads(out.read_text())
    assert (data["kind"], data["schema_version"]) == ("compare", COMPARE_SCHEMA_VERSION)
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]  # no temp file left


def test_merge_keeps_every_task_and_replaces_only_the_same_key() -> None:
    old = [record("arithmetic", "uniform", 0, 0.4, 0.5), record("hard", "uniform", 0, 0.0, 0.5)]
    merged = merge_runs(old, [record("hard", "uniform", 0, 0.1, 0.5)])
    assert [(r["task"], r["test_accuracy"]) for r in merged] == [("arithmetic", 0.4), ("hard", 0.1)]


def test_a_finished_run_is_skipped_an_unfinished_one_runs_again() -> None:
    done = record("arithmetic", "uniform", 0, 0.4, 0.5)
    cut = {key: done[key] for key in ("task", "arm", "seed", "sets")} | {"arm": "guided"}
    plan = [
        (("arithmetic", "uniform", 0), done["sets"]),
        (("arithmetic", "guided", 0), cut["sets"]),
        (("arithmetic", "uniform", 1), ["seed=1"]),
    ]
    assert [key for key, _ in pending(plan, [done, cut])] == [
        ("arithmetic", "guided", 0),
        ("arithmetic", "uniform", 1),
    ]


def test_a_finished_run_made_with_other_settings_is_refused() -> None:
    done = record("arithmetic", "uniform", 0, 0.4, 0.5)
    with pytest.raises(SettingsConflict, match="another --out"):
        pending([(("arithmetic", "uniform", 0), ["seed=0", "monitor.max_cycles=3"])], [done])


def test_a_file_of_another_schema_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"arithmetic": {"uniform": []}}))  # the format before merging
    with pytest.raises(ValueError, match="schema version"):
        read_runs(old)


def test_a_file_of_schema_2_without_a_kind_reads_as_a_comparison(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"  # as the improve.py before the kind field wrote it
    out.write_text(json.dumps({"schema_version": 2, "runs": [record("a", "uniform", 0, 0.4, 0.5)]}))
    assert any(x.startswith("guided - uniform") for x in file_report_lines(out))
    save_run(out, record("a", "guided", 0, 0.3, 0.5))  # the next merge names the kind
    data = json.loads(out.read_text())
    assert (data["kind"], data["schema_version"]) == ("compare", COMPARE_SCHEMA_VERSION)
    assert [r["arm"] for r in data["runs"]] == ["uniform", "guided"]


def test_compare_runs_only_what_the_file_lacks_and_reports_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[tuple[str, str]] = []

    def fake_run(task: Any, sets: list[str], root: Path) -> dict[str, Any]:
        seed = int(next(s for s in sets if s.startswith("seed=")).split("=")[1])
        arm = "guided" if "acquire.candidate_factor=3" in sets else "uniform"
        ran.append((arm, str(seed)))
        made = record(task.name, arm, seed, 0.4, 0.5)
        return {key: made[key] for key in made if key not in ("task", "arm", "seed", "sets")}

    monkeypatch.setattr(improve, "run_one", fake_run)
    monkeypatch.setattr(improve, "in_own_process", lambda target, *args: target(*args) or 0)
    monkeypatch.setattr(improve, "drawn_prompts", lambda folder: {"q1", "q2"})
    monkeypatch.setattr(
        improve, "sampled", lambda folder, task: record("a", "b", 0, 0, 0)["samples"]
    )
    out = tmp_path / "compare.json"

    def invoke(*seeds: int) -> None:
        args = argparse.Namespace(
            seeds=list(seeds),
            tasks=["arithmetic"],
            factor=3,
            cycles=2,
            sets=[],
            root=tmp_path,
            out=out,
        )
        improve.compare(args)

    invoke(0, 1)
    invoke(2)
    assert len(ran) == 6
    invoke(0, 1, 2)  # a restart of everything: nothing left to run
    assert len(ran) == 6
    assert "6 of 6 sessions already in" in capsys.readouterr().out
    assert sorted((r["arm"], r["seed"]) for r in read_runs(out)) == [
        ("guided", 0),
        ("guided", 1),
        ("guided", 2),
        ("uniform", 0),
        ("uniform", 1),
        ("uniform", 2),
    ]


# -- the report ----------------------------------------------------------------------------


@pytest.fixture
def three_seeds(tmp_path: Path) -> str:
    out = tmp_path / "compare.json"
    finals = {0: (0.400, 0.383), 1: (0.383, 0.450), 2: (0.417, 0.317)}
    runs = []
    for seed, (uniform, guided) in finals.items():
        runs.append(record("arithmetic", "uniform", seed, uniform, (0.47, 0.52, 0.47)[seed]))
        runs.append(record("arithmetic", "guided", seed, guided, (0.58, 0.66, 0.44)[seed]))
    runs.append({"task": "arithmetic", "arm": "guided", "seed": 3, "sets": []})  # cut, unfinished
    write_runs(out, runs)
    return "\n".join(report_lines(read_runs(out)))


def test_report_prints_per_seed_differences_and_their_mean(three_seeds: str) -> None:
    line = next(x for x in three_seeds.splitlines() if x.startswith("guided - uniform"))
    assert "seed 0 -1.7, seed 1 +6.7, seed 2 -10.0" in line
    assert "-1.7 points +- " in line and "(n=3)" in line


def test_report_prints_each_seeds_cycle_2_auroc_per_arm(three_seeds: str) -> None:
    row = next(x for x in three_seeds.splitlines() if "cycle 2, by seed" in x)
    assert "seed 0 0.470, seed 1 0.520, seed 2 0.470" in row
    assert "seed 0 0.580, seed 1 0.660, seed 2 0.440" in row


def test_report_prints_the_ratios_and_ranges_the_prose_quotes(three_seeds: str) -> None:
    lines = three_seeds.splitlines()
    tokens = next(x for x in lines if x.startswith("| tokens sampled"))
    assert tokens.endswith("| 1.00x |") and "10,100 +- " in tokens
    assert next(x for x in lines if x.startswith("| wasted-prompt share")).endswith("| 1.00x |")
    assert "0.44-0.66" in next(x for x in lines if "from cycle 2 on" in x)
    assert "0.79-0.79" in next(x for x in lines if "from cycle 2 on" in x)
    assert "0.4-9.0%" in next(x for x in lines if x.startswith("- pool scoring"))
    assert "3-8" in next(x for x in lines if x.startswith("- prompts with a right sample"))
    scoring = next(x for x in lines if x.startswith("| pool scoring / sampling time"))
    assert "| 0.0% +- 0.0 (n=3) | 4.7% +- 0.0 (n=3) |" in scoring  # uniform scores nothing


def test_report_has_a_row_per_cycle_of_every_finished_run(three_seeds: str) -> None:
    rows = [x for x in three_seeds.splitlines() if x.startswith("| arithmetic |")]
    assert len(rows) == 3 * 2 * 2  # seeds x arms x cycles; the cut seed 3 is left out
    assert "| arithmetic | 2 | guided | 2 | 40.0% | 20.0% | 0.440 |" in three_seeds


# -- training methods (`--methods`) ------------------------------------------------------


def test_methods_run_each_arm_and_seed_once_and_report_the_paired_gain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.compare_report import METHODS
    from benchmarks.methods_report import METHOD_ARMS

    finals = {
        "sft": 0.40,
        "grpo": 0.45,
        "grpo-learnability": 0.50,
        "sft-grpo": 0.35,
        "sft-grpo-learnability": 0.30,
    }
    ran: list[tuple[str, int]] = []

    def fake_run(task: Any, sets: list[str], root: Path) -> dict[str, Any]:
        seed = int(next(s for s in sets if s.startswith("seed=")).split("=")[1])
        arm = next(
            a for a, arm_sets in METHOD_ARMS.items() if sets[-len(arm_sets) :] == list(arm_sets)
        )
        ran.append((arm, seed))
        made = record(task.name, arm, seed, finals[arm] + 0.01 * seed, 0.6)
        made |= {"initial_dev_accuracy": 0.25, "dev_accuracy": finals[arm] - 0.05}
        made["optimize_seconds"] = [30.0, 40.0] if arm == "sft" else [60.0, 80.0]
        return {key: made[key] for key in made if key not in ("task", "arm", "seed", "sets")}

    monkeypatch.setattr(improve, "run_one", fake_run)
    monkeypatch.setattr(improve, "in_own_process", lambda target, *args: target(*args) or 0)
    monkeypatch.setattr(
        improve, "sampled", lambda folder, task: record("a", "b", 0, 0, 0)["samples"]
    )
    monkeypatch.setattr(improve, "drawn_prompts", lambda folder: {"q1", "q2", "q3"})
    out = tmp_path / "methods.json"
    args = argparse.Namespace(
        seeds=[0, 1],
        tasks=["arithmetic"],
        arms=list(METHOD_ARMS),
        cycles=2,
        sets=[],
        root=tmp_path,
        out=out,
    )
    improve.compare(args, METHODS)
    improve.compare(args, METHODS)  # again: everything is there, nothing runs
    assert sorted(ran) == sorted((arm, seed) for arm in METHOD_ARMS for seed in (0, 1))
    report = capsys.readouterr().out
    assert "### arithmetic: training methods (seeds 0, 1)" in report
    assert "| optimize seconds per cycle | 35 s +- 0 (n=2) | 70 s +- 0 (n=2) |" in report
    assert "| distinct prompts drawn | 3 +- 0 (n=2) |" in report
    gain = next(x for x in report.splitlines() if x.startswith("grpo - sft"))
    assert "5.0 pts +- 0.0 (n=2); seed 0 +5.0 pts, seed 1 +5.0 pts" in gain
    dev = next(x for x in report.splitlines() if x.startswith("| dev gain"))
    assert "| 10.0 pts +- 0.0 (n=2) | 15.0 pts +- 0.0 (n=2) |" in dev  # sft, grpo
    assert dev.endswith("| 5.0 pts +- 0.0 (n=2) | 0.0 pts +- 0.0 (n=2) |")  # the sft-grpo arms
    assert json.loads(out.read_text())["kind"] == "methods"
    assert "### arithmetic: training methods (seeds 0, 1)" in improve.file_report_lines(out)
