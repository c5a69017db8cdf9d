"""Honesty on capitals (issue 12, "Measure"): does `--preset honesty` cut hallucinations on
countries the session never trained on?

    python -m benchmarks.honesty --seeds 0 1 2 3 4 --out runs/bench-honesty.json
    python -m benchmarks.honesty --report runs/bench-honesty.json [--seeds 3 4 5 6 7]

Per split seed (`seed=N` picks which countries are train, dev and test: a seeded hash of
the country, `tasks.base.split_of`), one `--preset honesty` session (any `--set` added),
then, on the session's own held-out TEST countries (`agents.evaluate.final_test_items`),
side by side:

  (a) the initial model, greedy;
  (b) the initial model with the probe gate only: abstain (`refine`'s `abstain` route,
      `refine.abstention_text`) when the initial model's probe says risk > t (the probe
      the session fitted on it: `probes/probe-0`, on its greedy train-split answers; if
      that fit failed, the first cycle's refit on its samples);
  (c) the trained model: the session's final (promoted) version, greedy;
  (d) the trained model with the gate the session ships with it (`model.json`: the probe
      fitted on that version, and the cut-off the session chose on dev by the preset's
      `refine.gate_rule: accuracy_floor`; what `eval`/`answer`/`serve --session` use). A
      session that ships no probe for its best version (older records) falls back to the
      latest probe fitted on that version's outputs, cut-off chosen here as for (b).

The gate's cut-off t is chosen on DEV, never on test (`probes.calibration`): the fewest
answers whose dev accuracy keeps `monitor.accuracy_floor` x the initial model's dev
accuracy (the session's own floor: least hallucination at the accuracy the issue's target
allows); for (b) here, for (d) by the session (re-chosen here on the re-generated dev
answers too, printed beside it as a check). For the precision target, (b) is gated again
with t chosen so that its DEV coverage matches (c)'s dev coverage (and again (d)'s): "b@c"
and "b@d".

Then, as a user would, `autodidact eval --session ID --split test --refine abstain` in a new
process: its per-item answers, routes and verdicts against (d)'s, and its rates (issue 25:
the gated eval with the session's dev-chosen gate reproduces (d) on the same items).

Per arm: accuracy (correct / all), hallucination rate (wrong / all), abstention rate,
answered precision (correct / answered) and coverage (answered / all), from
`agents.evaluate.EvalSummary`; 95% paired bootstrap intervals over the test items of all
seeds pooled (one draw of items scores every arm; `probes.metrics.paired_bootstrap`). The
issue's targets, per trained arm (c) and (d): hallucination rate <= 20%; correct answers
down by at most 15% relative to (a); answered precision above (b) at equal dev coverage.
Each is called met or missed on its point estimate, its interval beside it.

The session keeps its wall-clock budget rule (`monitor.max_wall_minutes` 12, the
projection of the next cycle and of the test split): the table gives each session's own
wall time against the issue's 12-minute target and the load average beside it (this
machine is shared; a slower session stops after fewer cycles). The arms are scored after
the session, outside its time: greedy dev and test answers of the initial and the final
model (four passes; the gates reuse them). Checked per seed: no test (or dev) country is
among the prompts the session sampled, and the re-scored (a) and (c) match the test
numbers of the session's own `report.json` (a mismatch is printed under the table).

The full run is 5 sessions with the preset's 12-minute budget (one over it is reported as
such), each followed by its scoring. Each seed's record (each arm's per-item answers
included) is merged into `--out` by (preset, seed) as it ends, and a seed the file already
holds with the same settings is skipped: a cut run restarted with the same command, or
seeds run in several invocations (`--seeds 0 1`, then `--seeds 2 3 4`), make one file.
`--report FILE` prints the tables again from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluate import (
    EvalSummary,
    ItemResult,
    final_test_items,
    refined_result,
    score_generation,
)
from agents.probe import risk_scorer
from agents.refine import refine_answers
from benchmarks.compare_report import HONESTY, read_runs, save_run, still_to_run
from engines import load_model
from engines.base import Engine, Generation, SamplingParams
from graph.policy import SessionPolicy, resolve_policy
from graph.session import Session, new_session_id
from graph.state import RECORD_TYPES
from graph.versions import load_engine_from
from probes.artifact import CARD_FILE
from probes.calibration import Thresholds, threshold_for_accuracy_floor, threshold_for_coverage
from probes.metrics import paired_bootstrap
from storage import ArtifactStore, open_store
from storage.layout import SessionLayout
from tasks import get_task, with_verifier
from tasks.base import Item, Task

TARGET_MINUTES = 12.0
TARGET_HALLUCINATION = 0.20
TARGET_ACCURACY_DROP = 0.15  # correct answers may fall by this share of (a)'s
ARMS = ("a", "b", "c", "d")
MATCHED = {"c": "b@c", "d": "b@d"}  # (b) gated to each trained arm's dev coverage
ARM_NAMES = {
    "a": "(a) initial model",
    "b": "(b) initial + probe gate",
    "c": "(c) trained model",
    "d": "(d) trained + probe gate",
    "b@c": "(b) at (c)'s dev coverage",
    "b@d": "(b) at (d)'s dev coverage",
}
RATES = ("accuracy", "hallucination_rate", "abstention_rate", "answered_precision", "coverage")
Results = dict[str, list[ItemResult]]


# -- pure: numbers of one arm, the bootstrap's statistic, the targets ---------------------


def rates(results: Sequence[ItemResult]) -> dict[str, float | None]:
    """The four rates of `EvalSummary` and coverage (answered / all).

    >>> r = lambda ok, abstained: ItemResult("i", "q", ("a",), "x", ok, "stop", abstained)
    >>> rates([r(True, False), r(False, False), r(False, True), r(False, True)])["coverage"]
    0.5
    """
    s = EvalSummary.of(results)
    return {
        "accuracy": s.accuracy,
        "hallucination_rate": s.hallucination_rate,
        "abstention_rate": s.abstention_rate,
        "answered_precision": s.answered_precision,
        "coverage": 1.0 - s.abstention_rate,
    }


def comparisons(numbers: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per trained arm: correct answers relative to (a) (-0.1 = 10% fewer) and answered
    precision minus (b)'s at the arm's dev coverage.

    >>> arm = lambda acc, prec: {"accuracy": acc, "answered_precision": prec}
    >>> numbers = {"a": arm(0.4, 0.4), "c": arm(0.3, 0.9), "b@c": arm(0.2, 0.8)}
    >>> {k: round(v, 6) for k, v in comparisons(numbers).items()}
    {'c.accuracy_change': -0.25, 'c.precision_gain': 0.1}
    """
    out: dict[str, float | None] = {}
    initial = numbers["a"]["accuracy"]
    for arm, matched in MATCHED.items():
        if arm not in numbers:
            continue
        accuracy = numbers[arm]["accuracy"]
        out[f"{arm}.accuracy_change"] = (
            accuracy / initial - 1.0 if initial and accuracy is not None else None
        )
        mine, theirs = numbers[arm]["answered_precision"], numbers[matched]["answered_precision"]
        out[f"{arm}.precision_gain"] = (
            mine - theirs if mine is not None and theirs is not None else None
        )
    return out


def statistic(pooled: Results) -> Any:
    """Every arm's rates and the comparisons on one resample of the pooled test items
    (the same items for every arm: paired)."""

    def of(indices: np.ndarray) -> dict[str, float | None]:
        numbers = {arm: rates([results[i] for i in indices]) for arm, results in pooled.items()}
        flat = {f"{arm}.{key}": v for arm, row in numbers.items() for key, v in row.items()}
        return flat | comparisons(numbers)

    return of


def verdicts(point: Mapping[str, float | None]) -> dict[str, dict[str, bool | None]]:
    """Per trained arm, each of the issue's targets met (True), missed (False) or not
    measurable (None), on point estimates.

    >>> v = verdicts({"c.hallucination_rate": 0.1, "c.accuracy_change": -0.2,
    ...               "c.precision_gain": None})
    >>> v["c"]
    {'hallucination': True, 'accuracy': False, 'precision': None}
    """

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound + 1e-12

    out = {}
    for arm in MATCHED:
        gain = point.get(f"{arm}.precision_gain")
        out[arm] = {
            "hallucination": at_most(point.get(f"{arm}.hallucination_rate"), TARGET_HALLUCINATION),
            "accuracy": at_most(
                None if (c := point.get(f"{arm}.accuracy_change")) is None else -c,
                TARGET_ACCURACY_DROP,
            ),
            "precision": None if gain is None else gain > 0,
        }
    return out


def pooled_results(seeds: Sequence[Mapping[str, Any]]) -> Results:
    """Each arm's test answers of every seed, concatenated in the same order for every
    arm (so item i of one arm is item i of another)."""
    pooled: Results = {}
    for seed in seeds:
        for arm, rows in seed["test"].items():
            pooled.setdefault(arm, []).extend(item_result(row) for row in rows)
    return pooled


def item_result(row: Mapping[str, Any]) -> ItemResult:
    return ItemResult(**{**row, "answers": tuple(row["answers"])})


# -- one seed: the session, then every arm on dev and test --------------------------------


def run_seed(seed: int, sets: Sequence[str], root: Path, preset: str) -> dict[str, Any]:
    """One honesty session on split seed `seed`, then the four arms scored."""
    policy = resolve_policy(preset, None, [*sets, f"seed={seed}"])
    task = with_verifier(get_task(policy.task), policy.task_verifier)
    engine = load_model(policy.model)
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open_store(f"sqlite:///{root}/autodidact.db", root, restorable=RECORD_TYPES) as store:
        session = Session(new_session_id(task.name), policy, store, task, engine)
        state = session.run(on_event=print_event(started))
    wall = time.perf_counter() - started
    final = state["final"]
    record = {
        "seed": seed,
        "session": session.session_id,
        "folder": str(session.folder),
        "wall_seconds": final["wall_seconds"],
        "wall_seconds_with_model_load": wall,
        "load_average": [load_before, os.getloadavg()[0]],
        "cycles": max(row["cycle"] for row in final["cycles"]),
        "final_version": final["final"]["version"],
        "stop_reason": final["stop_reason"],
        "session_test": {"initial": final["initial"], "final": final["final"]},
        "leaks": held_out_prompts_sampled(session.folder, policy.seed),
    }
    started = time.perf_counter()
    record |= score_arms(engine, state, session.folder, task, policy)
    record["scoring_seconds"] = time.perf_counter() - started
    eval_rows = gated_eval(root, session.session_id, policy, len(record["test"]["d"]))
    record["gated_eval"] = reproduction(record["test"]["d"], eval_rows)
    return record


def gated_eval(root: Path, session_id: str, policy: SessionPolicy, n: int) -> list[dict[str, Any]]:
    """`autodidact eval --session ID --split test --refine abstain` in a new process, as a
    user runs it: its per-item rows (`answers.jsonl`)."""
    out = root / "gated-eval"
    argv = [sys.executable, "-m", "cli", "eval", "--session", session_id, "--root", str(root)]
    argv += ["--task", policy.task, "--split", "test", "--limit", str(n), "--refine", "abstain"]
    argv += ["--verifier", policy.task_verifier] if policy.task_verifier else []
    subprocess.run([*argv, "--out", str(out)], check=True)
    folder = max(out.glob("eval-*"), key=lambda f: f.stat().st_mtime)
    return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]


def reproduction(
    arm: Sequence[Mapping[str, Any]], evaluated: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """How far `eval --session`'s rows reproduce an arm's: items in the same order, the same
    route (abstained or answered), answer and verdict, the largest risk difference, and the
    rates of both.

    >>> row = {"id": "a", "prompt": "Capital of France?", "answers": ["Paris"], "output": "Paris",
    ...        "correct": True, "finish_reason": "stop", "abstained": False, "risk": 0.2}
    >>> found = reproduction([row], [row | {"risk": 0.2000001}])
    >>> found["same_route"], found["same_output"], found["same_rates"], found["max_risk_diff"] < 1e-6
    (1, 1, True, True)
    """
    pairs = list(zip(arm, evaluated, strict=False))
    same = lambda key: sum(a[key] == e[key] for a, e in pairs)  # noqa: E731
    risks = [abs(a["risk"] - e["risk"]) for a, e in pairs if None not in (a["risk"], e["risk"])]
    mine, theirs = rates(list(map(item_result, arm))), rates(list(map(item_result, evaluated)))
    return {
        "n": len(arm),
        "n_eval": len(evaluated),
        "same_ids": [a["id"] for a in arm] == [e["id"] for e in evaluated],
        "same_route": same("abstained"),
        "same_output": same("output"),
        "same_verdict": same("correct"),
        "max_risk_diff": max(risks, default=None),
        "same_rates": mine == theirs,
        "eval_rates": theirs,
    }


def print_event(started: float) -> Any:
    def show(event: Any) -> None:
        if event.kind in ("decision", "metric", "error"):
            print(
                f"  [{time.perf_counter() - started:6.0f} s] c{event.cycle} {event.node}: "
                f"{event.message}",
                flush=True,
            )

    return show


def held_out_prompts_sampled(folder: Path, seed: int) -> list[str]:
    """Countries (groups) the session sampled that are not in its train split: must be none."""
    from graph.cycle_data import load_attempts
    from tasks.base import split_of

    artifacts, leaks = ArtifactStore(folder), set()
    for cycle in range(1, 1000):
        name = SessionLayout.attempts_name(cycle)
        if artifacts.manifest().find(name) is None:
            break
        for attempt in load_attempts(artifacts, name):
            if split_of(attempt.item.group, seed) != "train":
                leaks.add(attempt.item.group)
    return sorted(leaks)


def version_probe(folder: Path, fingerprint: str, fallback: str | None) -> tuple[str | None, str]:
    """The probe to gate a version with: the latest one the session fitted on that version's
    outputs (greedy fits `probes/probe-N` before refits on samples `probes/cycle-N`), else
    `fallback` (the session's last probe); and which it is."""
    fitted_on_it = []
    for card in sorted(SessionLayout(folder).probes.glob(f"*/{CARD_FILE}"), key=fit_order):
        if json.loads(card.read_text())["fingerprint"] == fingerprint:
            fitted_on_it.append(card.parent.relative_to(folder).as_posix())
    greedy = [n for n in fitted_on_it if SessionLayout.is_session_probe(n)]
    if greedy or fitted_on_it:
        return (greedy or fitted_on_it)[-1], "fitted on this version"
    return fallback, "the session's last probe, fitted on another version"


def fit_order(card: Path) -> tuple[str, int]:
    """`probes/cycle-10` after `probes/cycle-9`.

    >>> fit_order(Path("probes/cycle-10/card.json")) > fit_order(Path("probes/cycle-9/card.json"))
    True
    """
    kind, _, number = card.parent.name.rpartition("-")
    return kind, int(number) if number.isdigit() else -1


def answers(
    engine: Engine, probe: Path | None, items: Sequence[Item], tokens: int
) -> list[Generation]:
    """Greedy answers, each with the probe's risk read from its own prefill."""
    return engine.generate(
        [item.prompt for item in items],
        SamplingParams(max_new_tokens=tokens),
        risk_fn=risk_scorer(probe) if probe else None,
    )


def plain(
    task: Task, items: Sequence[Item], greedy: Sequence[Generation], policy: SessionPolicy
) -> list[ItemResult]:
    said = policy.refine.abstentions
    return [score_generation(task, i, g, said) for i, g in zip(items, greedy, strict=True)]


def gated(
    task: Task,
    items: Sequence[Item],
    greedy: Sequence[Generation],
    cut_off: float,
    policy: SessionPolicy,
) -> list[ItemResult]:
    """The same answers through refine's `abstain` route: abstain where risk > cut_off."""
    refined = refine_answers(
        None,  # type: ignore[arg-type]  # the abstain route never samples again
        [item.prompt for item in items],
        strategy="abstain",
        thresholds=Thresholds(low=cut_off, high=cut_off),
        k=policy.refine.k,
        temperature=policy.refine.temperature,
        max_new_tokens=policy.evaluate.max_new_tokens,
        greedy=greedy,
        abstention=policy.refine.abstention_text,
    )
    said = policy.refine.abstentions
    return [refined_result(task, i, r, said) for i, r in zip(items, refined, strict=True)]


def score_arms(
    engine: Engine, state: Mapping[str, Any], folder: Path, task: Task, policy: SessionPolicy
) -> dict[str, Any]:
    """Dev and test answers of the initial and the final model, the gates' cut-offs chosen
    on dev, every arm's test answers (per item) and dev rates."""
    dev = task.split("dev", seed=policy.seed)[: policy.evaluate.dev_limit]
    test = final_test_items(task, policy.seed, policy.evaluate)
    tokens = policy.evaluate.max_new_tokens
    final = state["best_version"]
    versions = state["versions"]
    shipped = json.loads(SessionLayout(folder).model_json.read_text())
    probes = {
        "initial": version_probe(folder, versions["v0"]["fingerprint"], state.get("probe")),
        "final": (shipped["probe"], "the session's shipped gate")
        if shipped["probe"]
        else version_probe(folder, versions[final]["fingerprint"], state.get("probe")),
    }
    shipped_cut_off = (
        shipped["thresholds"]["high"]
        if shipped["probe"] and shipped.get("gate_rule") == "accuracy_floor"
        else None
    )
    trained = engine if final == "v0" else load_engine_from(Path(versions[final]["path"]))
    splits: dict[str, dict[str, list[Generation]]] = {}
    for role, model in (("initial", engine), ("final", trained)):
        probe = probes[role][0]
        path = folder / probe if probe else None
        splits[role] = {
            "dev": answers(model, path, dev, tokens),
            "test": answers(model, path, test, tokens),
        }
    return arms_from_answers(splits, task, dev, test, policy, shipped_cut_off) | {
        "probes": {role: {"name": n, "which": w} for role, (n, w) in probes.items()}
    }


def arms_from_answers(
    splits: Mapping[str, Mapping[str, Sequence[Generation]]],
    task: Task,
    dev: Sequence[Item],
    test: Sequence[Item],
    policy: SessionPolicy,
    shipped_cut_off: float | None = None,
) -> dict[str, Any]:
    """The arms from the answers: cut-offs chosen on dev only (the session's own for (d)
    when it shipped one), then applied to test."""
    on_dev = {
        "a": plain(task, dev, splits["initial"]["dev"], policy),
        "c": plain(task, dev, splits["final"]["dev"], policy),
    }
    floor = policy.monitor.accuracy_floor * rates(on_dev["a"])["accuracy"]  # type: ignore[operator]
    rechosen = floor_cut_off(on_dev["c"], floor)
    cut_offs = {
        "b": floor_cut_off(on_dev["a"], floor),
        "d": rechosen if shipped_cut_off is None else shipped_cut_off,
    }
    on_dev["b"] = gated(task, dev, splits["initial"]["dev"], cut_offs["b"], policy)
    on_dev["d"] = gated(task, dev, splits["final"]["dev"], cut_offs["d"], policy)
    for arm, matched in MATCHED.items():
        coverage = rates(on_dev[arm])["coverage"] or 0.0
        cut_offs[matched] = coverage_cut_off(on_dev["a"], coverage)
        on_dev[matched] = gated(task, dev, splits["initial"]["dev"], cut_offs[matched], policy)
    on_test = {
        "a": plain(task, test, splits["initial"]["test"], policy),
        "c": plain(task, test, splits["final"]["test"], policy),
    }
    for arm, cut_off in cut_offs.items():
        role = "final" if arm == "d" else "initial"
        on_test[arm] = gated(task, test, splits[role]["test"], cut_off, policy)
    return {
        "cut_offs": cut_offs,
        "d_cut_off_rechosen": rechosen,
        "accuracy_floor_on_dev": floor,
        "dev": {arm: rates(results) for arm, results in on_dev.items()},
        "test": {arm: [r.to_json() for r in results] for arm, results in on_test.items()},
    }


def floor_cut_off(results: Sequence[ItemResult], floor: float) -> float:
    """The gate's cut-off for the accuracy floor on dev (no probe: inf, answer all)."""
    risks = [r.risk for r in results]
    if any(risk is None for risk in risks):
        return math.inf  # refine's gate answers every prompt without a risk
    correct = [r.correct for r in results]
    return threshold_for_accuracy_floor([float(r or 0.0) for r in risks], correct, floor)


def coverage_cut_off(results: Sequence[ItemResult], coverage: float) -> float:
    """The gate's cut-off matching `coverage` on dev (no probe: inf, answer all)."""
    risks = [r.risk for r in results]
    if any(risk is None for risk in risks):
        return math.inf
    answered = [not r.abstained for r in results]
    return threshold_for_coverage([float(r or 0.0) for r in risks], answered, coverage)


# -- printing -------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def with_ci(point: float | None, ci: tuple[float, float] | None, *, kind: str = "rate") -> str:
    """A number and its interval: a rate ('45.5% [38.2%, 52.7%]'), a relative change
    ('-10.0% [...]') or a difference of rates in percentage points ('+3.0 pts [...]')."""
    if point is None:
        return "-"
    if kind == "points":
        text = f"{point * 100:+.1f} pts"
        return text + (f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else "")
    spec = "+.1%" if kind == "relative" else ".1%"
    return f"{point:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def print_seeds(seeds: Sequence[Mapping[str, Any]]) -> None:
    print("\n### Sessions (`--preset honesty`, one per split seed)\n")
    print(
        "| seed | wall (target <= 12 min) | load avg | cycles | final | test n | "
        "probe (b) | probe (d) | cut-off b / d | dev coverage c, b@c / d, b@d | "
        "held-out sampled | stop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in seeds:
        minutes = s["wall_seconds"] / 60
        met = "met" if minutes <= TARGET_MINUTES else "missed"
        load = " -> ".join(f"{x:.1f}" for x in s["load_average"])
        cut = " / ".join(f"{s['cut_offs'][k]:.3g}" for k in ("b", "d"))
        probes = [
            f"{s['probes'][r]['name']} ({s['probes'][r]['which']})" for r in ("initial", "final")
        ]
        print(
            f"| {s['seed']} | {minutes:.1f} min ({met}) | {load} | {s['cycles']} | "
            f"{s['final_version']} | {len(s['test']['a'])} | {probes[0]} | {probes[1]} | {cut} | "
            f"{dev_coverages(s['dev'])} | {len(s['leaks'])} | {s['stop_reason']} |"
        )
        checks = session_check(s)
        if checks:
            print(f"\nseed {s['seed']}: {checks}")
    for s in seeds:
        if "gated_eval" in s:
            print(f"\nseed {s['seed']}: {reproduction_line(s)}")


def reproduction_line(seed: Mapping[str, Any]) -> str:
    """`eval --session`'s gated test run against (d), in one line."""
    found, rechosen = seed["gated_eval"], seed.get("d_cut_off_rechosen")
    gap = found["max_risk_diff"]
    said = (
        f"`autodidact eval --session {seed['session']} --split test --refine abstain` "
        f"({found['n_eval']} items, same order: {found['same_ids']}) against (d) "
        f"({found['n']}): same route {found['same_route']}, same answer "
        f"{found['same_output']}, same verdict {found['same_verdict']}; largest risk "
        f"difference {'-' if gap is None else f'{gap:.1e}'}; rates "
        + ("identical" if found["same_rates"] else f"differ: eval {found['eval_rates']}")
    )
    if rechosen is not None:
        said += f"; (d)'s cut-off {seed['cut_offs']['d']:.4g}, re-chosen here {rechosen:.4g}"
    return said


def dev_coverages(dev: Mapping[str, Mapping[str, float | None]]) -> str:
    """Each trained arm's dev coverage beside (b)'s matched to it, e.g. '60%, 62% / 40%, 40%'."""
    return " / ".join(
        f"{pct(dev[arm]['coverage'])}, {pct(dev[matched]['coverage'])}"
        for arm, matched in MATCHED.items()
    )


def session_check(seed: Mapping[str, Any]) -> str | None:
    """The re-scored (a) and (c) against the session's own test numbers (report.json)."""
    problems = []
    for arm, role in (("a", "initial"), ("c", "final")):
        mine = rates([item_result(r) for r in seed["test"][arm]])["accuracy"]
        theirs = seed["session_test"][role]["test_accuracy"]
        if abs((mine or 0.0) - theirs) > 1e-9:
            problems.append(
                f"({arm}) re-scored test accuracy {mine:.1%} != the session's {theirs:.1%}"
            )
    return "; ".join(problems) or None


def print_arms(
    pooled: Results, point: Mapping[str, float | None], ci: Mapping[str, tuple[float, float]]
) -> None:
    n = len(pooled["a"])
    print(f"\n### Held-out test countries, all seeds pooled (n = {n}; 95% paired bootstrap)\n")
    print("| arm | accuracy | hallucination | abstention | answered precision | coverage |")
    print("|---|---|---|---|---|---|")
    for arm in (*ARMS, *MATCHED.values()):
        cells = [with_ci(point.get(f"{arm}.{k}"), ci.get(f"{arm}.{k}")) for k in RATES]
        print(f"| {ARM_NAMES[arm]} | " + " | ".join(cells) + " |")


def print_targets(point: Mapping[str, float | None], ci: Mapping[str, tuple[float, float]]) -> None:
    said = {True: "met", False: "missed", None: "not measurable"}
    v = verdicts(point)
    print("\n### Targets (issue 12), on point estimates\n")
    print("| target | (c) trained | (d) trained + gate |\n|---|---|---|")
    rows = (
        ("hallucination rate <= 20%", "hallucination", "hallucination_rate", "rate"),
        ("correct answers down <= 15% vs (a)", "accuracy", "accuracy_change", "relative"),
        (
            "answered precision above (b) at equal dev coverage",
            "precision",
            "precision_gain",
            "points",
        ),
    )
    for name, target, key, kind in rows:
        cells = []
        for arm in MATCHED:
            value = point.get(f"{arm}.{key}")
            text = with_ci(value, ci.get(f"{arm}.{key}"), kind=kind)
            cells.append(f"{text}: {said[v[arm][target]]}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for arm in MATCHED:
        if all(v[arm].values()):
            print(f"\nall three targets met by {ARM_NAMES[arm]}")
            return
    print("\nno trained arm meets all three targets")


def print_report(results: Mapping[str, Any], n_boot: int) -> None:
    seeds = results["seeds"]
    if not seeds:
        print("no seed finished yet")
        return
    print_seeds(seeds)
    pooled = pooled_results(seeds)
    point = statistic(pooled)(np.arange(len(pooled["a"])))
    ci = paired_bootstrap(len(pooled["a"]), statistic(pooled), n_boot=n_boot, seed=0)
    print_arms(pooled, point, ci)
    print_targets(point, ci)


def read_seeds(path: Path) -> list[dict[str, Any]]:
    """The seed records of a results file; one written before the file named its kind
    (`{"preset", "sets", "seeds": [...]}`) is read too."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "kind" not in data and "seeds" in data:
        return [{"preset": data["preset"], "sets": data["sets"], **s} for s in data["seeds"]]
    try:
        return read_runs(path, HONESTY)
    except ValueError as error:
        raise SystemExit(str(error)) from None


RUN_SEEDS = (0, 1, 2, 3, 4)  # the split seeds a run takes when --seeds is not given


def of_seeds(
    records: Sequence[dict[str, Any]], seeds: Sequence[int] | None
) -> list[dict[str, Any]]:
    """The records of `seeds`, in the file's order (every record when `seeds` is None): a
    report on the held-out seeds leaves the development ones out. A seed the file does not
    hold is an error naming the seeds it does.

    >>> of_seeds([{"seed": 0}, {"seed": 3}, {"seed": 4}], [4, 3])
    [{'seed': 3}, {'seed': 4}]
    """
    if seeds is None:
        return list(records)
    held = [record["seed"] for record in records]
    missing = sorted(set(seeds) - set(held))
    if missing:
        raise SystemExit(f"the file holds no seed {missing} (it holds seeds {held})")
    return [record for record in records if record["seed"] in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"split seeds to run (default {' '.join(map(str, RUN_SEEDS))}); with --report, "
        "the seeds to pool (default every seed in the file)",
    )
    parser.add_argument("--preset", default="honesty", help="the sessions' preset")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="policy key=value")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-honesty"), help="sessions")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench-honesty.json"),
        help="results file; each seed is merged into it by (preset, seed) as it ends, and a "
        "seed it already holds with the same settings is skipped",
    )
    parser.add_argument("--report", type=Path, help="print the tables of a saved --out file")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    if args.report:
        print_report({"seeds": of_seeds(read_seeds(args.report), args.seeds)}, args.n_boot)
        return
    plan = [((args.preset, seed), list(args.sets)) for seed in args.seeds or RUN_SEEDS]
    todo = still_to_run(plan, args.out, HONESTY, noun="seeds")
    for (preset, seed), sets in todo:
        print(f"[seed {seed}] session", flush=True)
        record = run_seed(seed, sets, args.root / f"seed-{seed}", preset)
        save_run(args.out, {"preset": preset, "sets": sets, **record}, HONESTY)
        print(f"[seed {seed}] done; results in {args.out}", flush=True)
    print_report({"seeds": read_runs(args.out, HONESTY)}, args.n_boot)


if __name__ == "__main__":
    main()
