"""Records the agents share: cycle metrics, the monitor's Decision, planner proposals and
the choice finally made. Records are a file format: each carries a `schema_version`, and
changing a field means bumping it.

Proposals (`Plan`, which each stage's module extends: `agents.acquire.AcquirePlan`, ...)
are what a planner chat model is asked to fill in: plain types only, no bounds, so an
out-of-range value reaches the rules (which clamp it with a recorded reason) instead of
failing as malformed; extra keys a model adds are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

# One version per record layout; changing a record's fields means bumping its own.
METRICS_SCHEMA_VERSION = 3  # 3: answered_precision and probe_aurc
DECISION_SCHEMA_VERSION = 2  # 2: a decision carries its cycle
PLAN_SCHEMA_VERSION = 1
CHOICE_SCHEMA_VERSION = 2  # 2: a planned choice carries its cycle
Action = Literal["loop", "retrain", "refit_probe", "rollback", "stop"]
ACTIONS: tuple[Action, ...] = ("loop", "retrain", "refit_probe", "rollback", "stop")
Stage = Literal["acquire", "select", "optimize", "monitor"]
Source = Literal["rules", "planner", "planner+override", "rules(fallback)"]
Evidence = dict[str, float | str | None]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CycleMetrics(_Record):
    """One model version on the dev split (cycle 0: the initial model)."""

    schema_version: int = METRICS_SCHEMA_VERSION
    cycle: int = Field(ge=0)
    version: str
    accuracy: float = Field(ge=0.0, le=1.0)
    hallucination_rate: float = Field(ge=0.0, le=1.0, description="answered and wrong / n")
    abstention_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="abstained / n")
    answered_precision: float | None = Field(
        default=None, ge=0.0, le=1.0, description="correct / answered (None: nothing answered)"
    )
    truncation_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="answers cut at the budget / n"
    )
    mean_risk: float | None = Field(
        default=None, description="mean probe risk on dev (None: no probe)"
    )
    probe_auroc: float | None = Field(
        default=None, description="probe AUROC on this version's fresh labels"
    )
    probe_ece: float | None = Field(
        default=None, description="probe calibration error on those labels"
    )
    probe_aurc: float | None = Field(
        default=None,
        description="area under the probe's risk-coverage curve on those labels (lower: better)",
    )
    predicted_accuracy: float | None = Field(
        default=None, description="1 - mean probe risk on dev: the probe's accuracy forecast"
    )
    stale_probe_auroc: float | None = Field(
        default=None,
        description="last cycle's probe on the same fresh labels (staleness, measured)",
    )
    stale_probe_ece: float | None = None
    logprob_auroc: float | None = Field(
        default=None, description="low mean token logprob as a risk, same labels (baseline)"
    )
    entropy_auroc: float | None = Field(
        default=None, description="mean token entropy as a risk, same labels (baseline)"
    )
    n_dev: int = Field(default=0, ge=0)
    train_examples: int = Field(default=0, ge=0, description="examples this version was trained on")
    candidates_scored: int = Field(
        default=0, ge=0, description="train prompts the probe scored from prefill this cycle"
    )
    prompts_sampled: int = Field(default=0, ge=0, description="prompts sampled K times")
    tokens_sampled: int = Field(default=0, ge=0, description="new tokens across those samples")
    wasted_share: float | None = Field(
        default=None, description="prompts whose K samples all got the same verdict / prompts"
    )
    mixed_share: float | None = Field(
        default=None, description="1 - wasted_share: prompts whose K samples got both verdicts"
    )
    predicted_mixed_share: float | None = Field(
        default=None,
        description="the mixed share the pass-rate posteriors expected when acquire chose the "
        "prompts (acquire.order learnability/thompson; None: uniform)",
    )
    scoring_seconds: float = Field(default=0.0, description="wall time scoring candidates")
    sampling_seconds: float = Field(default=0.0, description="wall time drawing the K samples")
    refine: str = "none"
    eval_seconds: float | None = Field(
        default=None, description="wall time of this evaluation on dev"
    )
    seconds: float | None = Field(
        default=None, description="wall time of the cycle that made this version"
    )


class Decision(_Record):
    """The monitor's choice, why, and the numbers it read.

    `promote` says whether the evaluated candidate may become the current version: never
    after a regression past the tolerance (the guard), nor on a retrain (which starts again
    from the best version)."""

    schema_version: int = DECISION_SCHEMA_VERSION
    cycle: int = Field(default=0, ge=0, description="the cycle the decision was made in")
    action: Action
    reason: str
    evidence: Evidence = Field(default_factory=dict)
    promote: bool = True
    source: Source = "rules"


# -- planner proposals ------------------------------------------------------------------


REASON_MAX_CHARS = 200  # a proposal's reason, as a constrained decoder is told


class Plan(BaseModel):
    """The base of every stage's proposal (`AcquirePlan` in `agents.acquire`, ...)."""

    model_config = ConfigDict(extra="ignore")

    # the record's schema, not the planner's choice: left out of the JSON schema a planner
    # model is shown (asked for it, a small model wrote 2023, or digits until its budget ran
    # out), and whatever a reply says is replaced
    schema_version: SkipJsonSchema[int] = PLAN_SCHEMA_VERSION
    # maxLength only in the JSON schema a constrained decoder reads (serve, vLLM): a small
    # model's reason then ends in time for the JSON to close within the planner's token
    # budget; a longer reason from an unconstrained model still validates
    reason: str = Field(
        default="",
        description="one sentence: why this choice",
        json_schema_extra={"maxLength": REASON_MAX_CHARS},
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _this_schema(cls, value: object) -> int:
        return PLAN_SCHEMA_VERSION


class PlannedChoice(_Record):
    """What a stage's planner proposed, what was finally used, and why."""

    schema_version: int = CHOICE_SCHEMA_VERSION
    cycle: int = Field(default=0, ge=0, description="the cycle the choice was made in")
    stage: Stage
    proposal: dict[str, Any] | None = None
    final: dict[str, Any]
    source: Source
    reason: str
    overrides: list[str] = Field(
        default_factory=list, description="each rule that changed the proposal"
    )
