"""Planners: each stage's choices come from the policy's rules, or from a chat model's
structured proposal that the rules then check against the policy's bounds.

Per stage: `*_rules(policy)` is the rules' choice, `check_*(proposal, policy)` clamps or
overrides unsafe values and says why. A proposal that fails (no reply, bad JSON, wrong
fields) falls back to the rules. For the monitor the rules and the regression guard have
the last word: a planner picks only among the actions the facts admit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, ValidationError, model_validator

from agents.acquire import AcquirePolicy
from agents.chat_model import make_chat_model
from agents.config import StageConfig
from agents.monitor import (
    HARD_RULES,
    Assessment,
    MonitorInputs,
    MonitorPolicy,
    admissible_actions,
    apply_rules,
    assess,
    make_decision,
    policy_gains,
)
from agents.optimize import TRAIN_KEYS, OptimizePolicy, method_at
from agents.records import (
    PLAN_SCHEMAS,
    AcquirePlan,
    CycleMetrics,
    Decision,
    DecisionPlan,
    OptimizePlan,
    PlannedChoice,
    SelectPlan,
    Stage,
)
from agents.refine import RefinePolicy
from agents.selection import ABSTAINING, SelectPolicy
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
        default=256, ge=16, description="Token budget of a 'self' planner's reply."
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


class SessionPolicy(Protocol):
    """The sections of the session policy a planner reads (`graph.policy.SessionPolicy`
    has them; agents never import graph)."""

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
STAGES: tuple[Stage, ...] = ("acquire", "select", "optimize", "monitor")
GUIDES: dict[Stage, str] = {
    "acquire": "Choose how many train prompts to sample this cycle, how many new prompts the model "
    "should write itself, and the band of probe risk (difficulty) to keep.",
    "select": "Choose how to pick training examples from the labelled samples: correct_only "
    "(rejection sampling), risk_weighted (solved prompts the probe found risky), self_judge, "
    "or learn_abstention (teach abstaining on prompts the model gets wrong).",
    "optimize": "Choose the learning rate and the number of epochs for this LoRA training run.",
    "monitor": "Choose the session's next action from the allowed ones: loop (new cycle), retrain "
    "(same data, adjusted settings), refit_probe, rollback (restore the best version) or stop.",
}


# -- rules and checks, per stage (pure) -------------------------------------------------


def acquire_rules(policy: SessionPolicy) -> dict[str, Any]:
    a = policy.acquire
    return {
        "prompts": a.prompts_per_cycle,
        "synthesize": a.synthesize_prompts,
        "min_risk": a.min_risk,
        "max_risk": a.max_risk,
    }


def check_acquire(plan: AcquirePlan, policy: SessionPolicy) -> tuple[dict[str, Any], list[str]]:
    a, notes = policy.acquire, list[str]()
    final = {
        "prompts": _clamp(
            "prompts", plan.prompts, 1, a.prompts_per_cycle, "acquire.prompts_per_cycle", notes
        ),
        "synthesize": _clamp(
            "synthesize",
            plan.synthesize,
            0,
            a.max_synthesize_prompts,
            "acquire.max_synthesize_prompts",
            notes,
        ),
        "min_risk": _clamp("min_risk", plan.min_risk, 0.0, 1.0, "a risk is in [0, 1]", notes),
        "max_risk": _clamp("max_risk", plan.max_risk, 0.0, 1.0, "a risk is in [0, 1]", notes),
    }
    if final["min_risk"] >= final["max_risk"]:
        notes.append(
            f"empty risk band [{final['min_risk']}, {final['max_risk']}] -> the policy's band"
        )
        final.update(min_risk=a.min_risk, max_risk=a.max_risk)
    return final, notes


def select_rules(policy: SessionPolicy) -> dict[str, Any]:
    rules = {"strategy": policy.select.strategy, "max_per_prompt": policy.select.max_per_prompt}
    return rules | abstention_settings(policy, policy.select.strategy)


def abstention_settings(policy: SessionPolicy, strategy: str) -> dict[str, Any]:
    """What an abstaining strategy reads besides the labels (none for the others): the
    policy's abstention text (shared with refine and evaluate), pass-rate threshold and
    the cap on the share of abstention examples."""
    if strategy not in ABSTAINING:
        return {}
    return {
        "abstention_text": policy.refine.abstention_text,
        "abstain_max_pass_rate": policy.select.abstain_max_pass_rate,
        "abstain_max_share": policy.select.abstain_max_share,
    }


def check_select(
    plan: SelectPlan, policy: SessionPolicy, *, probe_auroc: float | None, has_verifier: bool
) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    cap = policy.acquire.samples_per_prompt
    final = {
        "strategy": plan.strategy,
        "max_per_prompt": _clamp(
            "max_per_prompt", plan.max_per_prompt, 1, cap, "acquire.samples_per_prompt", notes
        ),
    }
    trust = policy.monitor.min_probe_auroc_to_trust
    if plan.strategy == "risk_weighted" and (probe_auroc is None or probe_auroc < trust):
        shown = "unknown" if probe_auroc is None else f"{probe_auroc:.2f}"
        notes.append(
            f"risk_weighted needs a trusted probe (AUROC {shown} < {trust}) "
            f"-> {policy.select.strategy}"
        )
        final["strategy"] = policy.select.strategy
    if plan.strategy == "self_judge" and has_verifier:
        notes.append(
            f"self_judge would replace the task's verifier labels -> {policy.select.strategy}"
        )
        final["strategy"] = policy.select.strategy
    switches = plan.strategy in ABSTAINING and policy.select.strategy not in ABSTAINING
    if switches and policy.monitor.score == "accuracy":
        notes.append(
            f"{plan.strategy} teaches abstentions, which monitor.score 'accuracy' counts as "
            f"wrong answers -> {policy.select.strategy}"
        )
        final["strategy"] = policy.select.strategy
    return final | abstention_settings(policy, final["strategy"]), notes


def optimize_rules(policy: SessionPolicy) -> dict[str, Any]:
    """Training settings (`agents.optimize.TrainSettings` fields, less the seed)."""
    return {key: getattr(policy.optimize, key) for key in TRAIN_KEYS}


def retrain_settings(
    previous: Mapping[str, Any], policy: OptimizePolicy, last_gain: float | None
) -> tuple[dict[str, Any], str]:
    """Settings for a retrain on the same data: gentler after an update that lost accuracy,
    longer (or, at max_epochs, faster) after one that did not move; always within bounds."""
    settings = _train_settings(previous, policy)
    epochs = float(settings["epochs"])
    if last_gain is not None and last_gain < 0:
        return gentler_settings(previous, policy, f"the update lost accuracy ({last_gain:+.1%})")
    if epochs < policy.max_epochs:
        settings["epochs"] = min(epochs + 1, policy.max_epochs)
        return (
            settings,
            f"the update did not move accuracy: epochs {epochs:g} -> {settings['epochs']:g}",
        )
    lr = float(settings["learning_rate"])
    new_lr = min(lr / policy.retrain_lr_factor, policy.max_learning_rate)
    settings["learning_rate"] = new_lr
    return (
        settings,
        f"the update did not move accuracy at max epochs: learning rate {lr:g} -> {new_lr:g}",
    )


def gentler_settings(
    previous: Mapping[str, Any], policy: OptimizePolicy, because: str
) -> tuple[dict[str, Any], str]:
    """`previous` run's settings with the learning rate times `retrain_lr_factor` (never
    under min_learning_rate), and why (`because`, then the change).

    >>> gentler_settings({"learning_rate": 2e-4}, OptimizePolicy(), "v2 was rolled back")[1]
    'v2 was rolled back: learning rate 0.0002 -> 0.0001'
    >>> gentler_settings({"learning_rate": 1e-5}, OptimizePolicy(), "v2 collapsed")[1]
    'v2 collapsed: learning rate 1e-05 is at optimize.min_learning_rate, kept'
    """
    settings = _train_settings(previous, policy)
    lr = float(settings["learning_rate"])
    new_lr = max(lr * policy.retrain_lr_factor, policy.min_learning_rate)
    settings["learning_rate"] = new_lr
    if new_lr == lr:
        return settings, f"{because}: learning rate {lr:g} is at optimize.min_learning_rate, kept"
    return settings, f"{because}: learning rate {lr:g} -> {new_lr:g}"


def _train_settings(previous: Mapping[str, Any], policy: OptimizePolicy) -> dict[str, Any]:
    return {key: getattr(policy, key) for key in TRAIN_KEYS} | {
        k: v for k, v in previous.items() if k in TRAIN_KEYS
    }


def check_optimize(
    plan: OptimizePlan, policy: SessionPolicy, rules: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    o, notes = policy.optimize, list[str]()
    final = dict(rules)
    if not math.isfinite(plan.learning_rate) or plan.learning_rate <= 0:
        notes.append(
            f"learning_rate {plan.learning_rate} is not a rate -> {rules['learning_rate']:g}"
        )
    else:
        bounds = "optimize.min_learning_rate/max_learning_rate"
        final["learning_rate"] = _clamp(
            "learning_rate",
            plan.learning_rate,
            o.min_learning_rate,
            o.max_learning_rate,
            bounds,
            notes,
        )
    if not math.isfinite(plan.epochs) or plan.epochs <= 0:
        notes.append(f"epochs {plan.epochs} is not a number of passes -> {rules['epochs']:g}")
    else:
        final["epochs"] = _clamp(
            "epochs", plan.epochs, 0.0, o.max_epochs, "optimize.max_epochs", notes
        )
    return final, notes


def _clamp(name: str, value: Any, low: Any, high: Any, why: str, notes: list[str]) -> Any:
    kept = min(max(value, low), high)
    if kept != value:
        notes.append(f"{name} {value:g} -> {kept:g} ({why})")
    return kept


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
    stage: Stage, policy: SessionPolicy, situation: Mapping[str, Any]
) -> list[BaseMessage]:
    system = (
        f"You plan the {stage} stage of a self-improvement session: a language model improving "
        f"itself on the task {policy.task!r}. {GUIDES[stage]} Stay within the bounds given; "
        "give a one-sentence reason."
    )
    return [SystemMessage(system), HumanMessage(json.dumps(situation, default=str))]


def history_rows(history: Sequence[CycleMetrics]) -> list[dict[str, Any]]:
    keep = (
        "cycle",
        "version",
        "accuracy",
        "hallucination_rate",
        "mean_risk",
        "probe_auroc",
        "train_examples",
    )
    return [{key: getattr(m, key) for key in keep} for m in history]


# -- the planner --------------------------------------------------------------------------


class Planner:
    """Each stage's choices: rules, or a chat model checked by the rules. Holds only the
    models; the policy comes with each call (it is the graph's runtime context)."""

    def __init__(self, models: Mapping[Stage, BaseChatModel | None] | None = None) -> None:
        self.models: dict[Stage, BaseChatModel | None] = {
            stage: (models or {}).get(stage) for stage in STAGES
        }

    @classmethod
    def from_policy(cls, policy: SessionPolicy, engine: Engine | None = None) -> Planner:
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

    def acquire(
        self, policy: SessionPolicy, *, cycle: int, history: Sequence[CycleMetrics]
    ) -> PlannedChoice:
        rules = acquire_rules(policy)
        bounds = {
            "prompts": [1, policy.acquire.prompts_per_cycle],
            "synthesize": [0, policy.acquire.max_synthesize_prompts],
        }
        situation = {
            "cycle": cycle,
            "history": history_rows(history),
            "bounds": bounds,
            "rules_choice": rules,
        }
        return self._plan(
            "acquire", policy, rules, situation, lambda plan: check_acquire(plan, policy)
        )

    def select(
        self,
        policy: SessionPolicy,
        *,
        cycle: int,
        history: Sequence[CycleMetrics],
        data: Mapping[str, Any] | None = None,
        has_verifier: bool = True,
    ) -> PlannedChoice:
        rules = select_rules(policy)
        auroc = history[-1].probe_auroc if history else None
        situation = {
            "cycle": cycle,
            "history": history_rows(history),
            "data": dict(data or {}),
            "probe_auroc": auroc,
            "has_verifier": has_verifier,
            "bounds": {"max_per_prompt": [1, policy.acquire.samples_per_prompt]},
            "rules_choice": rules,
        }

        def check(plan: SelectPlan) -> tuple[dict[str, Any], list[str]]:
            return check_select(plan, policy, probe_auroc=auroc, has_verifier=has_verifier)

        return self._plan("select", policy, rules, situation, check)

    def optimize(
        self,
        policy: SessionPolicy,
        *,
        cycle: int,
        history: Sequence[CycleMetrics],
        examples: int,
        previous: Mapping[str, Any] | None = None,
        last_gain: float | None = None,
        recipe: Mapping[str, Any] | None = None,
    ) -> PlannedChoice:
        """Training settings; with `previous` (a retrain) the rules adjust those, by the
        last evaluation's gain unless `last_gain` is given; else a `recipe` chosen after a
        rollback (its settings and `why`) replaces the policy's."""
        rules, why = optimize_rules(policy), "policy rules"
        if previous is None and recipe is not None:
            rules, why = _train_settings(recipe, policy.optimize), str(recipe.get("why", ""))
        rules["method"] = method_at(policy.optimize, cycle)
        if rules["method"] != policy.optimize.method:
            why = f"GRPO's warm-up (cycle {cycle} of {policy.optimize.grpo_warmup_cycles}): sft"
        if previous is not None:
            if last_gain is None and len(history) > 1:
                last_gain = policy_gains(history, policy.monitor)[-1]  # the retried update
            rules, why = retrain_settings(previous, policy.optimize, last_gain)
        o = policy.optimize
        situation = {
            "cycle": cycle,
            "history": history_rows(history),
            "examples": examples,
            "retrain": previous is not None,
            "bounds": {
                "learning_rate": [o.min_learning_rate, o.max_learning_rate],
                "epochs": [0, o.max_epochs],
            },
            "rules_choice": {"learning_rate": rules["learning_rate"], "epochs": rules["epochs"]},
        }
        return self._plan(
            "optimize",
            policy,
            rules,
            situation,
            lambda plan: check_optimize(plan, policy, rules),
            why,
        )

    def decide(
        self, policy: SessionPolicy, history: Sequence[CycleMetrics], inputs: MonitorInputs
    ) -> tuple[Decision, PlannedChoice]:
        """The monitor's Decision. A planner's proposal is taken only when no hard rule
        fired and the action is admissible."""
        facts = assess(history, policy.monitor, inputs)
        rule, rules_decision = apply_rules(facts, policy.monitor)
        model = self.models["monitor"]
        if model is None:
            return rules_decision, _monitor_choice(
                None, rules_decision, "rules", rules_decision.reason
            )
        allowed = sorted(admissible_actions(facts, policy.monitor))
        situation = {
            "evidence": rules_decision.evidence,
            "allowed_actions": allowed,
            "rules_choice": rules_decision.action,
        }
        messages = stage_messages("monitor", policy, situation)
        try:
            plan = ask_model(
                model, DecisionPlan, messages, {"action": rules_decision.action, "reason": "..."}
            )
        except Exception as error:  # a planner never breaks the session: the rules decide
            reason = f"planner reply unusable ({_one_line(error)}): {rules_decision.reason}"
            fallback = rules_decision.model_copy(update={"source": "rules(fallback)"})
            return fallback, _monitor_choice(None, fallback, "rules(fallback)", reason)
        return _judge_decision(plan, facts, policy, rule, rules_decision, set(allowed))

    def _plan(
        self,
        stage: Stage,
        policy: SessionPolicy,
        rules: dict[str, Any],
        situation: dict[str, Any],
        check: Callable[[Any], tuple[dict[str, Any], list[str]]],
        rules_reason: str = "policy rules",
    ) -> PlannedChoice:
        model = self.models[stage]
        if model is None:
            return PlannedChoice(stage=stage, final=rules, source="rules", reason=rules_reason)
        schema = PLAN_SCHEMAS[stage]
        example = {key: rules[key] for key in schema.model_fields if key in rules} | {
            "reason": "..."
        }
        try:
            plan = ask_model(model, schema, stage_messages(stage, policy, situation), example)
        except Exception as error:  # a planner never breaks the session: the rules decide
            reason = f"planner reply unusable ({_one_line(error)}): {rules_reason}"
            return PlannedChoice(stage=stage, final=rules, source="rules(fallback)", reason=reason)
        checked, notes = check(plan)
        proposal = plan.model_dump()
        final = {**rules, **checked}
        if notes:
            reason = "planner proposal overridden: " + "; ".join(notes)
            return PlannedChoice(
                stage=stage,
                proposal=proposal,
                final=final,
                source="planner+override",
                reason=reason,
                overrides=notes,
            )
        return PlannedChoice(
            stage=stage,
            proposal=proposal,
            final=final,
            source="planner",
            reason=plan.reason or "planner proposal within bounds",
        )


def _judge_decision(
    plan: DecisionPlan,
    facts: Assessment,
    policy: SessionPolicy,
    rule: str,
    rules_decision: Decision,
    allowed: set[str],
) -> tuple[Decision, PlannedChoice]:
    proposal = plan.model_dump()
    if plan.action == rules_decision.action:
        decision = rules_decision.model_copy(update={"source": "planner"})
        return decision, _monitor_choice(
            proposal, decision, "planner", plan.reason or rules_decision.reason
        )
    if rule in HARD_RULES or plan.action not in allowed:
        why = (
            f"the {rule} rule has the last word"
            if rule in HARD_RULES
            else f"{plan.action} is not allowed now"
        )
        note = f"planner proposed {plan.action}: {why}"
        decision = rules_decision.model_copy(
            update={"source": "planner+override", "reason": f"{rules_decision.reason} ({note})"}
        )
        return decision, _monitor_choice(
            proposal, decision, "planner+override", decision.reason, [note]
        )
    reason = (
        f"planner: {plan.reason or plan.action} "
        f"(rules would {rules_decision.action}: {rules_decision.reason})"
    )
    decision = make_decision(
        facts, policy.monitor, plan.action, reason, rules_action=rules_decision.action
    )
    decision = decision.model_copy(update={"source": "planner"})
    return decision, _monitor_choice(proposal, decision, "planner", reason)


def _monitor_choice(
    proposal: dict[str, Any] | None,
    decision: Decision,
    source: Any,
    reason: str,
    overrides: list[str] | None = None,
) -> PlannedChoice:
    final = {"action": decision.action, "reason": decision.reason, "promote": decision.promote}
    return PlannedChoice(
        stage="monitor",
        proposal=proposal,
        final=final,
        source=source,
        reason=reason,
        overrides=overrides or [],
    )


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or error.title
        return (
            f"{error.title}.{where}: {first['msg']}" if first["loc"] else f"{where}: {first['msg']}"
        )
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
