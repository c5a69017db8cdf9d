"""Planners backed by langchain-core's fake chat models: scripted proposals at each stage,
an unsafe one the rules override, malformed ones that fall back to the rules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult

from agents.monitor import MonitorInputs
from agents.optimize import TRAIN_KEYS, retrain_settings
from agents.planner import Planner, extract_json
from agents.records import CycleMetrics
from graph.policy import SessionPolicy, resolve_policy

POLICY = SessionPolicy()


def scripted(*replies: str | dict[str, Any]) -> FakeMessagesListChatModel:
    """A chat model that answers with these texts (dicts as JSON), in turn."""
    texts = [r if isinstance(r, str) else json.dumps(r) for r in replies]
    return FakeMessagesListChatModel(responses=[AIMessage(content=t) for t in texts])


class ToolCallingFake(FakeMessagesListChatModel):
    """Supports `with_structured_output` (tool calling), like hosted chat models."""

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Any:
        return self


class Broken(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        raise ConnectionError("server unreachable\nretry later")


def m(cycle: int, acc: float, **kw: Any) -> CycleMetrics:
    base: dict[str, Any] = {
        "version": f"v{cycle}",
        "hallucination_rate": 1 - acc,
        "train_examples": 40,
    }
    return CycleMetrics(cycle=cycle, accuracy=acc, **(base | kw))


HISTORY = [m(0, 0.14, train_examples=0, probe_auroc=0.55), m(1, 0.40, probe_auroc=0.55)]


# -- rules only --------------------------------------------------------------------------


def test_rules_planner_applies_the_policy() -> None:
    planner = Planner()
    acquire = planner.acquire(POLICY, cycle=1, history=HISTORY)
    assert acquire.source == "rules" and acquire.proposal is None
    assert acquire.final == {"prompts": 64, "synthesize": 0, "min_risk": 0.0, "max_risk": 1.0}
    assert planner.select(POLICY, cycle=1, history=HISTORY).final == {
        "strategy": "correct_only",
        "max_per_prompt": 2,
    }
    optimize = planner.optimize(POLICY, cycle=1, history=HISTORY, examples=40).final
    assert optimize["learning_rate"] == 2e-4 and optimize["method"] == "sft"


def test_optimize_choice_fits_train_settings() -> None:
    from agents.optimize import TrainSettings

    assert set(TRAIN_KEYS) <= {f.name for f in fields(TrainSettings)}
    final = Planner().optimize(POLICY, cycle=1, history=HISTORY, examples=40).final
    TrainSettings(**final, seed=0)


# -- a planner per stage -----------------------------------------------------------------


def test_acquire_proposal_within_bounds_is_taken() -> None:
    reply = {
        "prompts": 64,
        "synthesize": 8,
        "min_risk": 0.1,
        "max_risk": 0.9,
        "reason": "fewer, harder prompts",
    }
    choice = Planner({"acquire": scripted(reply)}).acquire(POLICY, cycle=1, history=HISTORY)
    assert choice.source == "planner" and choice.reason == "fewer, harder prompts"
    assert choice.final == {"prompts": 64, "synthesize": 8, "min_risk": 0.1, "max_risk": 0.9}
    assert choice.proposal is not None and choice.proposal["prompts"] == 64


def test_unsafe_acquire_proposal_is_clamped_with_reasons() -> None:
    reply = {"prompts": 100000, "synthesize": 500, "min_risk": 0.9, "max_risk": 0.2}
    choice = Planner({"acquire": scripted(reply)}).acquire(POLICY, cycle=1, history=HISTORY)
    assert choice.source == "planner+override"
    assert choice.final == {"prompts": 64, "synthesize": 32, "min_risk": 0.0, "max_risk": 1.0}
    assert "prompts 100000 -> 64 (acquire.prompts_per_cycle)" in choice.overrides
    assert any("empty risk band" in note for note in choice.overrides)
    assert (
        choice.proposal is not None and choice.proposal["prompts"] == 100000
    )  # recorded as proposed


@pytest.mark.parametrize(
    ("reply", "history", "final", "source"),
    [
        (
            {"strategy": "correct_only", "max_per_prompt": 2},
            HISTORY,
            {"strategy": "correct_only", "max_per_prompt": 2},
            "planner",
        ),
        # risk_weighted needs a probe better than chance (0.55 < 0.6): the rules' strategy
        (
            {"strategy": "risk_weighted", "max_per_prompt": 1},
            HISTORY,
            {"strategy": "correct_only", "max_per_prompt": 1},
            "planner+override",
        ),
        (
            {"strategy": "risk_weighted", "max_per_prompt": 1},
            [m(0, 0.1), m(1, 0.4, probe_auroc=0.8)],
            {"strategy": "risk_weighted", "max_per_prompt": 1},
            "planner",
        ),
        (
            {"strategy": "self_judge", "max_per_prompt": 9},
            HISTORY,
            {"strategy": "correct_only", "max_per_prompt": 4},
            "planner+override",
        ),
    ],
)
def test_select_proposals(
    reply: dict[str, Any], history: list[CycleMetrics], final: dict[str, Any], source: str
) -> None:
    choice = Planner({"select": scripted(reply)}).select(POLICY, cycle=2, history=history)
    assert (choice.final, choice.source) == (final, source)


HONEST = resolve_policy(
    overrides=[
        "select.strategy=learn_abstention",
        "select.abstain_max_pass_rate=0.25",
        "refine.abstention_text=Not known.",
        "monitor.score=honesty",
        "monitor.accuracy_floor=0.85",
    ]
)
ABSTAINING = {
    "abstention_text": "Not known.",
    "abstain_max_pass_rate": 0.25,
    "abstain_max_share": 1.0,
}


@pytest.mark.parametrize(
    ("policy", "reply", "final", "source"),
    [
        # the rules' choice carries the abstention text refine and evaluate share
        (
            HONEST,
            None,
            {"strategy": "learn_abstention", "max_per_prompt": 2, **ABSTAINING},
            "rules",
        ),
        (
            HONEST,
            {"strategy": "learn_abstention", "max_per_prompt": 1},
            {"strategy": "learn_abstention", "max_per_prompt": 1, **ABSTAINING},
            "planner",
        ),
        # a session scored on accuracy would count every taught abstention as wrong
        (
            POLICY,
            {"strategy": "learn_abstention", "max_per_prompt": 1},
            {"strategy": "correct_only", "max_per_prompt": 1},
            "planner+override",
        ),
        (
            resolve_policy(overrides=["monitor.score=honesty", "monitor.accuracy_floor=0.85"]),
            {"strategy": "learn_abstention", "max_per_prompt": 1},
            {
                "strategy": "learn_abstention",
                "max_per_prompt": 1,
                "abstention_text": "I don't know.",
                "abstain_max_pass_rate": 0.0,
                "abstain_max_share": 1.0,
            },
            "planner",
        ),
    ],
)
def test_learn_abstention_choices(
    policy: SessionPolicy, reply: dict[str, Any] | None, final: dict[str, Any], source: str
) -> None:
    planner = Planner({"select": scripted(reply)} if reply else None)
    choice = planner.select(policy, cycle=2, history=HISTORY)
    assert (choice.final, choice.source) == (final, source)


def test_unsafe_learning_rate_is_overridden() -> None:
    choice = Planner({"optimize": scripted({"learning_rate": 1.0, "epochs": 10})}).optimize(
        POLICY, cycle=1, history=HISTORY, examples=40
    )
    assert choice.source == "planner+override"
    assert choice.final["learning_rate"] == POLICY.optimize.max_learning_rate
    assert choice.final["epochs"] == POLICY.optimize.max_epochs
    assert choice.overrides == [
        "learning_rate 1 -> 0.0005 (optimize.min_learning_rate/max_learning_rate)",
        "epochs 10 -> 5 (optimize.max_epochs)",
    ]


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (scripted("I think a learning rate of about 3e-4 would be good."), "no JSON object"),
        (scripted({"epochs": 2}), "learning_rate"),  # a required field missing
        (scripted({"learning_rate": "fast", "epochs": 1}), "learning_rate"),
        (Broken(), "ConnectionError: server unreachable"),
    ],
    ids=["prose", "missing-field", "wrong-type", "model-error"],
)
def test_malformed_proposal_falls_back_to_the_rules(model: BaseChatModel, why: str) -> None:
    choice = Planner({"optimize": model}).optimize(POLICY, cycle=1, history=HISTORY, examples=40)
    assert choice.source == "rules(fallback)" and choice.proposal is None
    assert choice.final == Planner().optimize(POLICY, cycle=1, history=HISTORY, examples=40).final
    assert choice.reason.startswith("planner reply unusable (") and why in choice.reason
    assert "\n" not in choice.reason


def test_nan_proposal_is_not_a_rate() -> None:
    choice = Planner({"optimize": scripted('{"learning_rate": NaN, "epochs": 1}')}).optimize(
        POLICY, cycle=1, history=HISTORY, examples=40
    )
    assert choice.source == "planner+override" and choice.final["learning_rate"] == 2e-4


def test_structured_output_path() -> None:
    call = {
        "name": "OptimizePlan",
        "args": {"learning_rate": 1e-4, "epochs": 2, "reason": "small data"},
        "id": "c1",
    }
    model = ToolCallingFake(responses=[AIMessage(content="", tool_calls=[call])])
    choice = Planner({"optimize": model}).optimize(POLICY, cycle=1, history=HISTORY, examples=40)
    assert choice.source == "planner"
    assert (choice.final["learning_rate"], choice.final["epochs"]) == (1e-4, 2)


def test_a_reasons_length_bound_is_for_the_constrained_decoder_only() -> None:
    """Every plan's JSON schema bounds its reason (what serve's and vLLM's constrained
    decoding read, so a small model's JSON closes within the token budget), while a longer
    reason from an unconstrained model is still a valid proposal."""
    from agents.acquire import AcquirePlan
    from agents.monitor import DecisionPlan
    from agents.optimize import OptimizePlan
    from agents.records import REASON_MAX_CHARS
    from agents.selection import SelectPlan

    for plan in (AcquirePlan, SelectPlan, OptimizePlan, DecisionPlan):
        assert plan.model_json_schema()["properties"]["reason"]["maxLength"] == REASON_MAX_CHARS
    long = "x" * (REASON_MAX_CHARS + 50)
    assert OptimizePlan(learning_rate=1e-4, epochs=1, reason=long).reason == long


def test_retrain_adjusts_the_previous_settings() -> None:
    previous = {"learning_rate": 2e-4, "epochs": 1.0, "method": "sft"}
    lost, why = retrain_settings(previous, POLICY.optimize, last_gain=-0.01)
    assert lost["learning_rate"] == 1e-4 and "learning rate 0.0002 -> 0.0001" in why
    flat, why = retrain_settings(previous, POLICY.optimize, last_gain=0.0)
    assert flat["epochs"] == 2.0 and flat["learning_rate"] == 2e-4
    capped, _ = retrain_settings(
        {"learning_rate": 4e-4, "epochs": POLICY.optimize.max_epochs},
        POLICY.optimize,
        last_gain=0.0,
    )
    assert capped["learning_rate"] == POLICY.optimize.max_learning_rate
    floor, _ = retrain_settings({"learning_rate": 1e-5}, POLICY.optimize, last_gain=-0.1)
    assert floor["learning_rate"] == POLICY.optimize.min_learning_rate
    choice = Planner().optimize(
        POLICY, cycle=2, history=HISTORY, examples=40, previous=previous, last_gain=0.0
    )
    assert choice.final["epochs"] == 2.0 and "epochs 1 -> 2" in choice.reason
    # without last_gain, the last evaluation's gain decides: v1 lost 1 point -> gentler
    lost = [m(0, 0.40), m(1, 0.39)]
    choice = Planner().optimize(POLICY, cycle=1, history=lost, examples=40, previous=previous)
    assert choice.final["learning_rate"] == 1e-4 and "lost accuracy (-1.0%)" in choice.reason


def test_after_a_rollback_the_next_run_takes_the_gentler_recipe() -> None:
    recipe = {
        "learning_rate": 1e-4,
        "epochs": 2.0,
        "why": "v2 regressed: learning rate 0.0002 -> 0.0001",
    }
    choice = Planner().optimize(POLICY, cycle=3, history=HISTORY, examples=40, recipe=recipe)
    assert (choice.final["learning_rate"], choice.final["epochs"]) == (1e-4, 2.0)
    assert choice.reason == recipe["why"]
    retry = Planner().optimize(
        POLICY,
        cycle=3,
        history=HISTORY,
        examples=40,
        previous=recipe,
        recipe=recipe,
        last_gain=-0.1,
    )
    assert retry.final["learning_rate"] == 5e-5, "a retrain adjusts the run it retries"


# -- the monitor: the rules and the regression guard have the last word --------------------

PLATEAU = [m(0, 0.30), m(1, 0.40), m(2, 0.405, train_examples=4)]  # rules: stop (plateau)
REGRESSED = [m(0, 0.40), m(1, 0.30)]  # rules: rollback
SIGNALS = {"elapsed_minutes": 3.0}


def test_monitor_rules_only() -> None:
    decision, choice = Planner().decide(
        POLICY, PLATEAU, MonitorInputs(best_version="v1", **SIGNALS)
    )
    assert (
        decision.action == "stop" and choice.source == "rules" and choice.final["action"] == "stop"
    )


def test_monitor_planner_may_choose_among_admissible_actions() -> None:
    model = scripted({"action": "loop", "reason": "the data looked thin; one more cycle"})
    decision, choice = Planner({"monitor": model}).decide(
        POLICY, PLATEAU, MonitorInputs(best_version="v1", **SIGNALS)
    )
    assert decision.action == "loop" and decision.source == "planner"
    assert (
        decision.reason.startswith("planner: the data looked thin")
        and "rules would stop" in decision.reason
    )
    assert decision.evidence["rules_action"] == "stop"
    assert choice.proposal == {
        "schema_version": 1,
        "reason": "the data looked thin; one more cycle",
        "action": "loop",
    }


def test_monitor_planner_cannot_overrule_the_regression_guard() -> None:
    model = scripted({"action": "loop", "reason": "keep going"})
    decision, choice = Planner({"monitor": model}).decide(
        POLICY, REGRESSED, MonitorInputs(best_version="v0", **SIGNALS)
    )
    assert decision.action == "rollback" and decision.promote is False
    assert decision.source == "planner+override"
    assert "the regression rule has the last word" in decision.reason
    assert choice.overrides == ["planner proposed loop: the regression rule has the last word"]


def test_monitor_planner_cannot_pick_an_inadmissible_action() -> None:
    # retrain needs good data (train_examples >= 16); v2 had 4 examples
    decision, _ = Planner({"monitor": scripted({"action": "retrain"})}).decide(
        POLICY, PLATEAU, MonitorInputs(best_version="v1", **SIGNALS)
    )
    assert decision.action == "stop" and "retrain is not allowed now" in decision.reason


def test_monitor_planner_cannot_overrule_the_budget() -> None:
    model = scripted({"action": "loop"})
    decision, _ = Planner({"monitor": model}).decide(
        POLICY, [m(0, 0.1), m(1, 0.3)], MonitorInputs(best_version="v0", elapsed_minutes=13)
    )
    assert decision.action == "stop" and "the budget rule has the last word" in decision.reason


def test_monitor_malformed_proposal_falls_back() -> None:
    model = scripted({"action": "celebrate"})
    decision, choice = Planner({"monitor": model}).decide(
        POLICY, PLATEAU, MonitorInputs(best_version="v1", **SIGNALS)
    )
    assert decision.action == "stop" and decision.source == "rules(fallback)"
    assert choice.source == "rules(fallback)" and "action" in choice.reason


def test_planner_from_policy_specs() -> None:
    reply = json.dumps({"learning_rate": 3e-4, "epochs": 1, "reason": "scripted"})
    policy = resolve_policy(overrides=[f"planner.optimize=fake:{reply}"])
    planner = Planner.from_policy(policy)
    assert planner.models["acquire"] is None and planner.models["optimize"] is not None
    choice = planner.optimize(policy, cycle=1, history=HISTORY, examples=40)
    assert choice.source == "planner" and choice.final["learning_rate"] == 3e-4


def test_extract_json() -> None:
    assert extract_json('noise {"a": [1, {"b": 2}]} tail {"c": 3}') == {"a": [1, {"b": 2}]}
    assert extract_json('{bad} then {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("[1, 2]")
