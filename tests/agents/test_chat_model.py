"""The model under improvement as a langchain-core chat model, and the spec factory."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agents.chat_model import ChatModelError, EngineChatModel, make_chat_model
from agents.planner import Planner
from agents.records import CycleMetrics
from engines.base import Generation, ProgressFn, RiskFn, Sample, SamplingParams
from graph.policy import SessionPolicy


@dataclass
class FakeEngine:
    """An Engine with canned greedy answers; it records how it was called."""

    replies: dict[str, str] = field(default_factory=dict)
    default: str = "I don't know."
    name: str = "fake-engine"
    fingerprint: str = "0" * 16
    num_layers: int = 2
    captures_prefill: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        self.calls.append({"prompts": list(prompts), "params": params, "risk_fn": risk_fn})
        out = []
        for prompt in prompts:
            text = self.replies.get(prompt, self.default)
            sample = Sample(
                text, [1] * len(text.split()), [-0.1] * len(text.split()), [0.2], "stop"
            )
            out.append(Generation(prompt, [sample] * params.n, risk=0.25))
        return out

    def hidden_states(self, prompts: Sequence[str], **kwargs: Any) -> list[Any]:
        raise NotImplementedError


def test_engine_answers_through_invoke() -> None:
    engine = FakeEngine({"What is the capital of France?": "The capital of France is Paris."})
    model = EngineChatModel(engine=engine, max_new_tokens=32)
    reply = model.invoke("What is the capital of France?")
    assert isinstance(reply, AIMessage) and reply.content == "The capital of France is Paris."
    assert reply.response_metadata["risk"] == 0.25
    assert reply.response_metadata["finish_reason"] == "stop"
    (call,) = engine.calls
    assert call["prompts"] == ["What is the capital of France?"]
    assert call["params"] == SamplingParams(max_new_tokens=32)  # greedy, one answer
    assert call["risk_fn"] is None


def test_the_probe_given_to_the_chat_model_reaches_generate() -> None:
    def probe(states: object) -> float:
        return 0.5

    engine = FakeEngine()
    EngineChatModel(engine=engine, risk_fn=probe).invoke("Hi")
    assert engine.calls[0]["risk_fn"] is probe


def test_conversation_is_flattened_and_stop_passed() -> None:
    engine = FakeEngine(default="ok")
    model = EngineChatModel(engine=engine)
    model.invoke(
        [SystemMessage("Answer in one word."), HumanMessage("Capital of Peru?")], stop=["\n"]
    )
    (call,) = engine.calls
    assert call["prompts"] == ["Answer in one word.\n\nCapital of Peru?"]
    assert call["params"].stop == ("\n",)
    model.invoke([HumanMessage("Hi"), AIMessage("Hello"), HumanMessage("2+2?")])
    assert engine.calls[-1]["prompts"] == ["User: Hi\n\nAssistant: Hello\n\nUser: 2+2?"]


def test_the_model_itself_can_plan() -> None:
    """The 'self' planner goes through the JSON path (the engine has no tool calling)."""
    engine = FakeEngine(
        default='Here you go: {"learning_rate": 0.0001, "epochs": 2, "reason": "small data"}'
    )
    policy = SessionPolicy.model_validate({"planner": {"optimize": "self"}})
    planner = Planner.from_policy(policy, engine)
    assert isinstance(planner.models["optimize"], EngineChatModel)
    history = [CycleMetrics(cycle=0, version="v0", accuracy=0.1, hallucination_rate=0.9)]
    choice = planner.optimize(policy, cycle=1, history=history, examples=30)
    assert choice.source == "planner" and choice.final["epochs"] == 2
    assert "learning_rate" in engine.calls[0]["prompts"][0]  # the JSON instruction reached it


def test_make_chat_model_specs() -> None:
    engine = FakeEngine()
    assert make_chat_model("rules", engine) is None
    assert isinstance(make_chat_model("self", engine), EngineChatModel)
    fake = make_chat_model("fake:" + json.dumps({"action": "stop"}))
    assert isinstance(fake, BaseChatModel) and json.loads(str(fake.invoke("x").content)) == {
        "action": "stop"
    }
    with pytest.raises(ChatModelError, match="needs the model under improvement"):
        make_chat_model("self")
    with pytest.raises(ChatModelError, match="not 'provider:model'"):
        make_chat_model("gpt4")


@pytest.mark.skipif(
    importlib.util.find_spec("langchain") is not None, reason="langchain is installed"
)
def test_hosted_model_without_langchain_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # as if not installed
    with pytest.raises(ChatModelError, match=r"pip install 'autodidact\[planners\]'"):
        make_chat_model("openai:gpt-4o-mini")
    monkeypatch.setitem(sys.modules, "langchain", None)
    with pytest.raises(ChatModelError, match="pip install langchain langchain-anthropic"):
        make_chat_model("anthropic:claude")


def test_an_openai_compatible_planner_needs_a_key_or_a_local_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ChatModelError, match="needs OPENAI_API_KEY, or OPENAI_BASE_URL"):
        make_chat_model("openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    model = make_chat_model("openai:served", max_new_tokens=128)
    assert model is not None and model.openai_api_base == "http://127.0.0.1:8000/v1"  # type: ignore[attr-defined]
    assert (model.temperature, model.max_tokens) == (0.0, 128)  # type: ignore[attr-defined]  # greedy, the policy's budget
    assert "unused" not in repr(model), "the key is never shown"
