"""The planner: each stage's choices come from the policy's rules, or from a chat model's
structured proposal that the stage's own check holds to its bounds.

What a stage plans lives in its module, behind `agents.planning.StagePlanning` (the plan
schema, the rules' choice, what a chat model is shown, the check); `Planner.plan` is the
loop over them: the rules' choice, then, where the stage has a chat model, its proposal,
checked. A proposal that fails (no reply, bad JSON, wrong fields) falls back to the rules.
For the monitor the rules and the regression guard have the last word: a planner picks
only among the actions the facts admit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, ValidationError, model_validator

from agents.acquire import ACQUIRE_PLANNING, AcquireFacts, AcquirePolicy
from agents.chat_model import make_chat_model
from agents.config import StageConfig
from agents.monitor import MONITOR_PLANNING, MonitorInputs, MonitorPolicy, assess, planned_decision
from agents.optimize import OPTIMIZE_PLANNING, OptimizeFacts, OptimizePolicy
from agents.planning import StagePlanning
from agents.records import CycleMetrics, Decision, PlannedChoice, Stage
from agents.refine import RefinePolicy
from agents.selection import SELECT_PLANNING, SelectFacts, SelectPolicy
from engines.base import Engine

PLANNER_SPEC = re.compile(r"^(rules|self|fake(:.*)?|[A-Za-z0-9_.-]+:\S.*)$", re.DOTALL)


class PlannerPolicy(StageConfig):
    """Who makes each stage's choices: the rules, or a chat model whose proposal the rules check."""

    acquire: str = Field(
        default="rules",
        description="'rules', 'self' (the model under improvement) or 'provider:model'.",
    )
    select: str = Field(default="rules", description="'rules', 'self' or 'provider:model'.")
    optimize: str = Field(default="rules", description="'rules', 'self' or 'provider:model'.")
    monitor: str = Field(
        default="rules",
        description="'rules', 'self' or 'provider:model'; the rules and regression guard "
        "have the last word.",
    )
    max_new_tokens: int = Field(
        default=256,
        ge=16,
        description="Token budget of a planner's reply ('self', or 'openai:NAME' over HTTP).",
    )

    @model_validator(mode="after")
    def _check(self) -> PlannerPolicy:
        for stage in ("acquire", "select", "optimize", "monitor"):
            spec = getattr(self, stage)
            if not PLANNER_SPEC.match(spec):
                raise ValueError(
                    f"planner.{stage} {spec!r} is not a planner: use 'rules', 'self', or "
                    "'provider:model' such as 'openai:gpt-4o-mini'"
                )
        return self


class SessionSections(Protocol):
    """The sections of the session policy the planner reads (`graph.policy.SessionPolicy`
    has them; agents never import graph); each stage's planning reads its own few."""

    @property
    def task(self) -> str: ...
    @property
    def acquire(self) -> AcquirePolicy: ...
    @property
    def select(self) -> SelectPolicy: ...
    @property
    def optimize(self) -> OptimizePolicy: ...
    @property
    def monitor(self) -> MonitorPolicy: ...
    @property
    def refine(self) -> RefinePolicy: ...
    @property
    def planner(self) -> PlannerPolicy: ...


P = TypeVar("P", bound=BaseModel)
F = TypeVar("F")
STAGES: tuple[Stage, ...] = ("acquire", "select", "optimize", "monitor")


# -- asking a chat model ------------------------------------------------------------------


def ask_model(
    model: BaseChatModel,
    schema: type[P],
    messages: Sequence[BaseMessage],
    example: Mapping[str, Any],
) -> P:
    """A structured proposal: `with_structured_output` where the model supports it, else
    a JSON reply parsed and validated with the schema. Raises on any failure."""
    try:
        structured = model.with_structured_output(schema)
    except NotImplementedError:
        structured = None
    if structured is not None:
        return schema.model_validate(structured.invoke(list(messages)))
    instruction = "Reply with only one JSON object with the keys of this example: " + json.dumps(
        dict(example)
    )
    reply = model.invoke([*messages, HumanMessage(instruction)])
    return schema.model_validate(extract_json(reply.text))


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in a reply (code fences and chatter around it allowed).

    >>> extract_json('Sure! ```json\\n{"epochs": 2}\\n``` done')
    {'epochs': 2}
    """
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(f"no JSON object in the reply {text[:80]!r}")


def stage_messages(
    planning: StagePlanning[Any, Any, Any], policy: SessionSections, situation: Mapping[str, Any]
) -> list[BaseMessage]:
    system = (
        f"You plan the {planning.stage} stage of a self-improvement session: a language model "
        f"improving itself on the task {policy.task!r}. {planning.guide} Stay within the bounds "
        "given; give a one-sentence reason."
    )
    return [SystemMessage(system), HumanMessage(json.dumps(situation, default=str))]


# -- the planner --------------------------------------------------------------------------


class Planner:
    """Each stage's choices: rules, or a chat model checked by the rules. Holds only the
    models; the policy comes with each call (it is the graph's runtime context).

    `plan` is the one loop over stages; `acquire`, `select`, `optimize` and `decide` name
    each stage's facts for the graph's nodes."""

    def __init__(self, models: Mapping[Stage, BaseChatModel | None] | None = None) -> None:
        self.models: dict[Stage, BaseChatModel | None] = {
            stage: (models or {}).get(stage) for stage in STAGES
        }

    @classmethod
    def from_policy(cls, policy: SessionSections, engine: Engine | None = None) -> Planner:
        """Models named in `policy.planner` ('self' wraps `engine`)."""
        budget = policy.planner.max_new_tokens
        return cls(
            {
                stage: make_chat_model(
                    getattr(policy.planner, stage), engine, max_new_tokens=budget
                )
                for stage in STAGES
            }
        )

    def plan(
        self, planning: StagePlanning[SessionSections, F, Any], policy: SessionSections, facts: F
    ) -> PlannedChoice:
        """The stage's choice: the rules', or its chat model's proposal after the stage's
        check (the rules' values fill in what the proposal leaves out)."""
        rules, why = planning.rules(policy, facts)
        name, model = planning.stage, self.models[planning.stage]
        if model is None:
            return PlannedChoice(stage=name, final=rules, source="rules", reason=why)
        # the JSON a model without tool calling is shown: the plan's fields as the rules chose
        fields = [key for key in planning.schema.model_fields if key in rules and key != "reason"]
        example = {key: rules[key] for key in fields} | {"reason": "..."}
        messages = stage_messages(planning, policy, planning.situation(policy, facts, rules))
        try:
            plan = ask_model(model, planning.schema, messages, example)
        except Exception as error:  # a planner never breaks the session: the rules decide
            reason = f"planner reply unusable ({_one_line(error)}): {why}"
            return PlannedChoice(stage=name, final=rules, source="rules(fallback)", reason=reason)
        checked, notes, account = planning.check(plan, policy, facts, rules)
        proposal, final = plan.model_dump(), {**rules, **checked}
        if notes:
            return PlannedChoice(
                stage=name,
                proposal=proposal,
                final=final,
                source="planner+override",
                reason=account or "planner proposal overridden: " + "; ".join(notes),
                overrides=list(notes),
            )
        reason = account or plan.reason or "planner proposal within bounds"
        return PlannedChoice(
            stage=name, proposal=proposal, final=final, source="planner", reason=reason
        )

    def acquire(
        self, policy: SessionSections, *, cycle: int, history: Sequence[CycleMetrics]
    ) -> PlannedChoice:
        return self.plan(ACQUIRE_PLANNING, policy, AcquireFacts(cycle, history))

    def select(
        self,
        policy: SessionSections,
        *,
        cycle: int,
        history: Sequence[CycleMetrics],
        data: Mapping[str, Any] | None = None,
        has_verifier: bool = True,
    ) -> PlannedChoice:
        return self.plan(SELECT_PLANNING, policy, SelectFacts(cycle, history, data, has_verifier))

    def optimize(
        self,
        policy: SessionSections,
        *,
        cycle: int,
        history: Sequence[CycleMetrics],
        examples: int,
        previous: Mapping[str, Any] | None = None,
        last_gain: float | None = None,
        recipe: Mapping[str, Any] | None = None,
    ) -> PlannedChoice:
        """Training settings (`agents.optimize.OptimizeFacts` says what each fact does)."""
        facts = OptimizeFacts(cycle, history, examples, previous, last_gain, recipe)
        return self.plan(OPTIMIZE_PLANNING, policy, facts)

    def decide(
        self, policy: SessionSections, history: Sequence[CycleMetrics], inputs: MonitorInputs
    ) -> tuple[Decision, PlannedChoice]:
        """The monitor's Decision, and the choice it stands for."""
        facts = assess(history, policy.monitor, inputs)
        choice = self.plan(MONITOR_PLANNING, policy, facts)
        return planned_decision(facts, policy.monitor, choice), choice


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or error.title
        return (
            f"{error.title}.{where}: {first['msg']}" if first["loc"] else f"{where}: {first['msg']}"
        )
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
