"""The planners benchmark's pure parts (no model, no server): each recorded choice's outcome
(accepted, clamped, overridden, fallback) counted per stage, told apart on the notes the
stages' real checks write; the safety checks on a session's records; the results file and
its report."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage

import benchmarks.planners as planners
from agents.monitor import MonitorInputs
from agents.planner import Planner
from agents.records import CycleMetrics, Decision, PlannedChoice
from benchmarks.compare_report import PLANNERS, read_runs, save_run
from benchmarks.planners import (
    below_floor,
    checks,
    outcome,
    outcome_counts,
    past_guard,
    promotions,
    report_lines,
    same_as_rules,
    scoring_problems,
    shares,
)
from graph.events import TestScores
from graph.policy import SessionPolicy

POLICY = SessionPolicy()


def scripted(reply: str | dict[str, Any]) -> FakeMessagesListChatModel:
    text = reply if isinstance(reply, str) else json.dumps(reply)
    return FakeMessagesListChatModel(responses=[AIMessage(content=text)])


def m(cycle: int, accuracy: float, **kw: Any) -> CycleMetrics:
    base: dict[str, Any] = {"version": f"v{cycle}", "train_examples": 40}
    return CycleMetrics(
        cycle=cycle, accuracy=accuracy, hallucination_rate=1 - accuracy, **(base | kw)
    )


HISTORY = [m(0, 0.14, train_examples=0, probe_auroc=0.55), m(1, 0.40, probe_auroc=0.55)]


def choice(stage: str, source: str, overrides: list[str] | None = None, **kw: Any) -> Any:
    return PlannedChoice(
        stage=stage,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        final=kw.pop("final", {}),
        reason=kw.pop("reason", "x"),
        overrides=overrides or [],
        **kw,
    )


# -- outcomes, from hand-built records ------------------------------------------------------


def test_counts_and_shares_per_stage_and_overall() -> None:
    clamp = "prompts 100000 -> 64 (acquire.prompts_per_cycle)"
    plans = [
        choice("acquire", "planner", proposal={"prompts": 8}),
        choice("acquire", "planner+override", [clamp], proposal={"prompts": 100000}),
        choice(
            "acquire",
            "planner+override",
            [clamp, "empty risk band [0.9, 0.2] -> the policy's band"],
            proposal={"prompts": 100000, "min_risk": 0.9, "max_risk": 0.2},
        ),
        choice("select", "rules(fallback)", reason="planner reply unusable (boom): rules"),
        choice("optimize", "planner", proposal={"learning_rate": 1e-4}),
        choice("monitor", "rules"),
    ]
    counts = outcome_counts(plans)
    assert list(counts) == ["acquire", "select", "optimize", "monitor", "all"]
    assert counts["acquire"] == {
        "accepted": 1,
        "clamped": 1,
        "overridden": 1,  # a clamp and another rule's note: overridden
        "fallback": 0,
        "rules": 0,
    }
    assert counts["all"] == {
        "accepted": 2,
        "clamped": 1,
        "overridden": 1,
        "fallback": 1,
        "rules": 1,
    }
    assert shares(counts["all"]) == pytest.approx(
        {
            "accepted": 2 / 6,
            "clamped": 1 / 6,
            "overridden": 1 / 6,
            "fallback": 1 / 6,
            "rules": 1 / 6,
        }
    )
    assert shares(counts["select"])["fallback"] == 1.0
    assert shares({o: 0 for o in planners.OUTCOMES})["accepted"] is None


def test_a_clamp_note_must_name_a_proposed_field() -> None:
    # the text of a clamp, but about no field of the proposal: not a clamp
    stray = choice("optimize", "planner+override", ["epochs 10 -> 5 (x)"], proposal={"lr": 1.0})
    assert outcome(stray) == "overridden"
    assert outcome(choice("optimize", "planner+override", [], proposal={})) == "overridden"


# -- outcomes, from the notes the stages' real checks write ---------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "expected"),
    [
        ("acquire", {"prompts": 8, "synthesize": 0, "min_risk": 0.1, "max_risk": 0.9}, "accepted"),
        ("acquire", {"prompts": 100000, "synthesize": 500}, "clamped"),
        ("acquire", {"prompts": 8, "min_risk": 0.9, "max_risk": 0.2}, "overridden"),
        ("select", {"strategy": "correct_only", "max_per_prompt": 9}, "clamped"),
        ("select", {"strategy": "self_judge", "max_per_prompt": 1}, "overridden"),
        ("optimize", {"learning_rate": 1.0, "epochs": 10}, "clamped"),
        ("optimize", {"learning_rate": 0, "epochs": 1}, "overridden"),
        ("optimize", "a learning rate of about 3e-4 would be good", "fallback"),
    ],
)
def test_the_outcome_of_a_real_checks_choice(
    stage: str, reply: str | dict[str, Any], expected: str
) -> None:
    planner = Planner({stage: scripted(reply)})  # type: ignore[dict-item]
    if stage == "acquire":
        made = planner.acquire(POLICY, cycle=1, history=HISTORY)
    elif stage == "select":
        made = planner.select(POLICY, cycle=1, history=HISTORY)
    else:
        made = planner.optimize(POLICY, cycle=1, history=HISTORY, examples=40)
    assert outcome(made) == expected, made


def test_the_monitor_refused_by_the_regression_guard_is_overridden() -> None:
    regressed = [m(0, 0.40), m(1, 0.30)]  # the rules roll back
    decision, made = Planner({"monitor": scripted({"action": "loop"})}).decide(
        POLICY, regressed, MonitorInputs(best_version="v0", elapsed_minutes=3.0)
    )
    assert outcome(made) == "overridden" and decision.promote is False
    assert promotions([decision]) == []


# -- the rules session beside ----------------------------------------------------------------


def test_same_as_rules_compares_the_values_used_at_the_same_cycle_and_stage() -> None:
    rules = [
        choice("optimize", "rules", final={"epochs": 1, "reason": "rules"}, cycle=1),
        choice("optimize", "rules", final={"epochs": 1}, cycle=2),
    ]
    http = [
        choice("optimize", "planner", final={"epochs": 1, "reason": "mine"}, cycle=1),
        choice("optimize", "planner", final={"epochs": 2}, cycle=2),
        choice("optimize", "planner", final={"epochs": 2}, cycle=3),  # the rules stopped before
    ]
    assert same_as_rules(http, rules) == {"optimize": (1, 2), "all": (1, 2)}


# -- the safety guarantees -------------------------------------------------------------------


def promoted(cycle: int, version: str, gain: float = 0.1) -> Decision:
    return Decision(
        cycle=cycle, action="loop", reason="", evidence={"version": version, "gain": gain}
    )


def test_a_promotion_below_the_floor_is_found() -> None:
    history = [m(0, 0.40), m(1, 0.30), m(2, 0.36)]
    decisions = [promoted(1, "v1"), promoted(2, "v2")]
    assert below_floor(history, decisions, 0.85) == [
        "v1 promoted in cycle 1 with dev accuracy 30.0% < floor 34.0%"
    ]
    assert below_floor(history, decisions, 0.0) == []  # no floor (the default preset's)
    held_back = decisions[0].model_copy(update={"promote": False})
    assert below_floor(history, [held_back, decisions[1]], 0.85) == []
    nothing_trained = Decision(cycle=1, action="stop", reason="", evidence={"version": None})
    assert promotions([nothing_trained]) == []


def test_a_promotion_past_the_regression_guard_is_found() -> None:
    assert past_guard([promoted(1, "v1", gain=-0.01)], 0.02) == []
    assert past_guard([promoted(1, "v1", gain=-0.05)], 0.02) == [
        "v1 promoted in cycle 1 with gain -5.0% beyond the -2.0% tolerance"
    ]


def scores(role: str, version: str, accuracy: float = 0.5) -> TestScores:
    return TestScores(
        role=role,
        version=version,
        test_accuracy=accuracy,
        test_hallucination_rate=1 - accuracy,
        test_truncated=0,
        n_test=16,
    )


def test_the_test_split_scored_once_per_model() -> None:
    assert scoring_problems([scores("initial", "v0"), scores("final", "v2")], 1, ["v0", "v2"]) == []
    assert scoring_problems([scores("initial", "v0")], 1, ["v0", "v0"]) == []  # kept v0
    assert scoring_problems([scores("initial", "v0")], 1, ["v0", "v2"]) == ["v2 scored 0 times"]
    twice = [scores("initial", "v0"), scores("final", "v2"), scores("final", "v2")]
    assert scoring_problems(twice, 2, ["v0", "v2"]) == ["finalize ran 2 times", "v2 scored 2 times"]


UNUSABLE = "planner reply unusable (APITimeoutError: Request timed out.): policy rules"


def record(arm: str, **changes: Any) -> dict[str, Any]:
    """A session's record as `run_arm` writes it."""
    plans = [
        choice(
            "acquire",
            "rules" if arm == "rules" else "planner",
            final={"prompts": 8 if arm == "rules" else 16},
            cycle=1,
        ),
        choice(
            "optimize",
            "rules" if arm == "rules" else "rules(fallback)",
            cycle=1,
            reason="policy rules" if arm == "rules" else UNUSABLE,
        ),
    ]
    base = {
        "preset": "quick",
        "seed": 0,
        "arm": arm,
        "sets": [],
        "max_cycles": 1,
        "served_model": None if arm == "rules" else "smollm2-135m-instruct",
        "wall_seconds": 90.0,
        "cycles": 1,
        "plans": [p.model_dump(mode="json") for p in plans],
        "decisions": [promoted(1, "v1").model_dump(mode="json")],
        "history": [h.model_dump(mode="json") for h in (m(0, 0.30), m(1, 0.35))],
        "test_scores": [s.model_dump(mode="json") for s in (scores("initial", "v0", 0.25),)]
        + [scores("final", "v1", 0.3125).model_dump(mode="json")],
        "finalize_runs": 1,
        "node_seconds": {"acquire": 10.0 if arm == "rules" else 300.0, "finalize": 5.0},
        "test": {
            "initial": {"version": "v0", "test_accuracy": 0.25, "n_test": 16},
            "final": {"version": "v1", "test_accuracy": 0.3125, "n_test": 16},
        },
        "stop_reason": "cycle budget spent",
        "accuracy_floor": 0.0,
        "regression_tolerance": 0.02,
    }
    return base | changes


def test_checks_of_a_sessions_record() -> None:
    assert checks(record("http")) == {"floor": [], "guard": [], "test_once": []}
    twice = checks(record("http", accuracy_floor=1.0, finalize_runs=2))
    assert twice["floor"] == [] and twice["test_once"] == ["finalize ran 2 times"]  # 35% >= 30%
    history = [h.model_dump(mode="json") for h in (m(0, 0.40), m(1, 0.35))]
    below = checks(record("http", accuracy_floor=1.0, history=history))
    assert below["floor"] == ["v1 promoted in cycle 1 with dev accuracy 35.0% < floor 40.0%"]


# -- the results file and its report ---------------------------------------------------------


def test_sessions_merge_into_one_file_and_report_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "planners.json"
    save_run(out, record("http"), PLANNERS)
    save_run(out, record("rules"), PLANNERS)
    save_run(out, record("rules", wall_seconds=60.0), PLANNERS)  # the same key: replaced
    runs = read_runs(out, PLANNERS)
    assert [r["arm"] for r in runs] == ["rules", "http"] and runs[0]["wall_seconds"] == 60.0
    text = "\n".join(report_lines(runs))
    assert "| http | all | 2 | 1 (50.0%) | 0 | 0 | 1 (50.0%) | 0 | 1 of 2 |" in text
    assert "| rules | all | 2 | 0 | 0 | 0 | 0 | 2 (100.0%) | - |" in text
    assert "| rules | 1 | 1.0 min | 16 | 25.0% (v0) | 31.2% (v1) | +6.2 pts | v1 |" in text
    assert "safety guarantees: kept in every session" in text
    assert "| acquire | 10.0 | 300.0 |" in text and "| session | 60.0 | 90.0 |" in text
    assert "http: fallbacks\n  1 x APITimeoutError: Request timed out." in text
    assert report_lines([]) == ["no session finished yet"]


def test_the_benchmarks_doctests_pass() -> None:
    # benchmarks/ is outside pytest's doctest paths: its examples are run here
    assert doctest.testmod(planners).failed == 0
