"""One stage's planning, behind one small protocol. Each stage's module (acquire, selection,
optimize, monitor) keeps its own: the plan a chat model is asked to fill in, the rules'
choice, what the model is shown (the stage's bounds among it) and the check that holds a
proposal to the same bounds. `agents.planner.Planner` is the loop over the stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from agents.records import CycleMetrics, Plan, Stage

PolicyT = TypeVar("PolicyT", contravariant=True)
FactsT = TypeVar("FactsT", contravariant=True)
PlanT = TypeVar("PlanT", bound=Plan)
RULES_REASON = "policy rules"


class Checked(NamedTuple):
    """A proposal after its stage's check."""

    final: dict[str, Any]  # the values used (the rules' fill in what is missing)
    notes: Sequence[str] = ()  # each rule that changed the proposal
    reason: str | None = None  # the stage's own account (None: the planner's usual one)


class StagePlanning(Protocol[PolicyT, FactsT, PlanT]):
    """A stage's choices: `rules` without a chat model (the choice and why); `situation`,
    what a chat model is shown (the facts, the bounds, the rules' choice); `check`, a
    proposal held to the same bounds, each change said. `PolicyT` is the session policy's
    sections the stage reads, `FactsT` what the node knows besides."""

    stage: Stage
    schema: type[PlanT]  # what a chat model fills in
    guide: str  # what to choose, in the chat model's instructions

    def rules(self, policy: PolicyT, facts: FactsT) -> tuple[dict[str, Any], str]: ...

    def situation(
        self, policy: PolicyT, facts: FactsT, rules: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    def check(
        self, plan: PlanT, policy: PolicyT, facts: FactsT, rules: Mapping[str, Any]
    ) -> Checked: ...


@dataclass(frozen=True)
class Bound:
    """The range a proposed value must keep: shown to the chat model as `[low, high]` and
    enforced by `clamp`; `why` names what sets it."""

    low: float
    high: float
    why: str


def shown_bounds(bounds: Mapping[str, Bound]) -> dict[str, list[float]]:
    """Bounds as a chat model reads them.

    >>> shown_bounds({"epochs": Bound(0, 5.0, "optimize.max_epochs")})
    {'epochs': [0, 5.0]}
    """
    return {name: [bound.low, bound.high] for name, bound in bounds.items()}


def clamp(name: str, value: Any, bound: Bound, notes: list[str]) -> Any:
    """`value` within `bound`; a change is noted with its reason.

    >>> notes: list[str] = []
    >>> clamp("prompts", 100, Bound(1, 64, "acquire.prompts_per_cycle"), notes), notes
    (64, ['prompts 100 -> 64 (acquire.prompts_per_cycle)'])
    """
    kept = min(max(value, bound.low), bound.high)
    if kept != value:
        notes.append(f"{name} {value:g} -> {kept:g} ({bound.why})")
    return kept


def history_rows(history: Sequence[CycleMetrics]) -> list[dict[str, Any]]:
    """The evaluation history as a chat model is shown it."""
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
