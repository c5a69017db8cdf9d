"""The session policy: one pydantic model per component, checked before anything loads.

Precedence: defaults < preset < YAML file < `--set key=value` overrides (dotted keys,
values parsed as YAML scalars). Every problem is one `PolicyError` line naming where the
value came from, the field and the fix; an unknown key names the nearest valid one.

The resolved `SessionPolicy` is the LangGraph graph's runtime context
(`StateGraph(..., context_schema=SessionPolicy)`): nodes read it as `runtime.context`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from engines.loading import DEFAULT_MODEL

POLICY_SCHEMA_VERSION = 1
RefineStrategy = Literal["none", "self_consistency", "abstain", "best_of_n", "risk_adaptive"]
SelectStrategy = Literal["correct_only", "risk_weighted", "self_judge"]
PLANNER_SPEC = re.compile(r"^(rules|self|fake(:.*)?|[A-Za-z0-9_.-]+:\S.*)$", re.DOTALL)


class PolicyError(ValueError):
    """A bad policy: one line naming the field (and where it was set) and the fix."""


class _Component(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AcquirePolicy(_Component):
    """Acquire: prompts from the task's train split (and self-instruct), K samples each."""

    prompts_per_cycle: int = Field(
        default=64,
        ge=1,
        description="Train-split prompts drawn per cycle; also the most a planner may ask for.",
    )
    samples_per_prompt: int = Field(
        default=4, ge=1, description="Sampled candidates (K) per prompt."
    )
    temperature: float = Field(
        default=0.8, ge=0.0, le=2.0, description="Sampling temperature for the K candidates."
    )
    top_p: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass for the K candidates."
    )
    max_new_tokens: int = Field(
        default=96,
        ge=1,
        description="Token budget per sample; too small and answers are cut before they finish.",
    )
    synthesize_prompts: int = Field(
        default=0,
        ge=0,
        description="New prompts the model writes per cycle (self-instruct); 0 turns it off.",
    )
    max_synthesize_prompts: int = Field(
        default=32,
        ge=0,
        description="The most self-instruct prompts a planner may ask for in one cycle.",
    )
    min_risk: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Difficulty band, low end: prompts whose pre-generation probe risk is "
        "below are skipped as too easy (0 keeps all).",
    )
    max_risk: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Difficulty band, high end: prompts whose probe risk is above are skipped as "
        "hopeless (1 keeps all).",
    )

    @model_validator(mode="after")
    def _check(self) -> AcquirePolicy:
        if self.min_risk >= self.max_risk:
            raise ValueError(
                f"acquire.min_risk ({self.min_risk}) must be below acquire.max_risk "
                f"({self.max_risk}): widen the difficulty band"
            )
        if self.synthesize_prompts > self.max_synthesize_prompts:
            raise ValueError(
                f"acquire.synthesize_prompts ({self.synthesize_prompts}) exceeds "
                f"acquire.max_synthesize_prompts ({self.max_synthesize_prompts}): raise the cap "
                "or ask for fewer"
            )
        if self.temperature == 0 and self.samples_per_prompt > 1:
            raise ValueError(
                "acquire.temperature 0 makes the K samples identical: set acquire.temperature > 0 "
                "or acquire.samples_per_prompt=1"
            )
        return self


class SelectPolicy(_Component):
    """Select: verifier (or self-judge) labels -> an SFT set and preference pairs."""

    strategy: SelectStrategy = Field(
        default="correct_only",
        description="correct_only: rejection sampling (STaR); risk_weighted: prefer solved "
        "prompts the probe rates uncertain; self_judge: the model judges its own samples "
        "(no verifier).",
    )
    max_per_prompt: int = Field(
        default=2,
        ge=1,
        description="Distinct correct samples kept per prompt (at most samples_per_prompt).",
    )
    dedupe: bool = Field(
        default=True, description="Drop examples whose normalized prompt and completion repeat."
    )
    min_examples: int = Field(
        default=8,
        ge=1,
        description="Fewer selected examples than this and the cycle skips optimize.",
    )
    pairs: bool = Field(
        default=True,
        description="Build preference pairs (a correct and an incorrect sample of one prompt); "
        "DPO needs them.",
    )


class OptimizePolicy(_Component):
    """Optimize: LoRA SFT or DPO with TRL + peft; a new model version per run."""

    method: Literal["sft", "dpo"] = Field(
        default="sft", description="sft on selected examples, or dpo on preference pairs."
    )
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    learning_rate: float = Field(default=2e-4, gt=0.0, description="Learning rate the rules use.")
    min_learning_rate: float = Field(
        default=1e-5, gt=0.0, description="Lowest learning rate a planner or a retrain may use."
    )
    max_learning_rate: float = Field(
        default=5e-4, gt=0.0, description="Highest learning rate a planner may use."
    )
    epochs: float = Field(
        default=3.0, gt=0.0, description="Passes over the selected data the rules use."
    )
    max_epochs: float = Field(
        default=5.0, gt=0.0, description="Most passes a planner or a retrain may use."
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per optimizer step.")
    max_steps: int = Field(
        default=0, ge=0, description="Cap on optimizer steps per training run (0: no cap)."
    )
    dpo_beta: float = Field(
        default=0.1, gt=0.0, description="DPO's beta (strength of the KL anchor)."
    )
    retrain_lr_factor: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A retrain after an update that lost accuracy multiplies the learning rate by "
        "this (never below min_learning_rate).",
    )

    @model_validator(mode="after")
    def _check(self) -> OptimizePolicy:
        lo, lr, hi = self.min_learning_rate, self.learning_rate, self.max_learning_rate
        if not lo <= lr <= hi:
            raise ValueError(
                f"optimize.learning_rate {lr:g} is outside [min_learning_rate {lo:g}, "
                f"max_learning_rate {hi:g}]: move the rate or the bounds"
            )
        if self.epochs > self.max_epochs:
            raise ValueError(
                f"optimize.epochs ({self.epochs:g}) exceeds optimize.max_epochs "
                f"({self.max_epochs:g}): raise max_epochs or lower epochs"
            )
        return self


class EvaluatePolicy(_Component):
    """Evaluate: held-out dev each cycle (test once at the end), greedy and refined."""

    dev_limit: int | None = Field(
        default=100, ge=1, description="Dev items scored each cycle (null: the whole split)."
    )
    test_limit: int | None = Field(
        default=None,
        ge=1,
        description="Test items scored at the end for the initial and final model (null: all).",
    )
    max_new_tokens: int = Field(default=96, ge=1, description="Token budget per dev/test answer.")
    refine: RefineStrategy = Field(
        default="none",
        description="Inference refinement applied when evaluating (see the refine section).",
    )


class RefinePolicy(_Component):
    """Refine: self-consistency, probe-gated abstention, best-of-N, risk-adaptive routing."""

    k: int = Field(default=5, ge=2, description="Samples for self-consistency and best-of-N.")
    temperature: float = Field(
        default=0.7, gt=0.0, le=2.0, description="Sampling temperature for the k samples."
    )
    low_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Risk at or below which risk_adaptive answers greedily (null: chosen on "
        "the probe's validation split for target_precision).",
    )
    high_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Risk above which the answer abstains or goes to fallback_model (null: "
        "chosen on the probe's validation split).",
    )
    target_precision: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Precision of answered items the thresholds are chosen for.",
    )
    fallback_model: str | None = Field(
        default=None,
        description="Chat model ('provider:model') that answers high-risk prompts in "
        "risk_adaptive; null: abstain instead.",
    )

    @model_validator(mode="after")
    def _check(self) -> RefinePolicy:
        low, high = self.low_threshold, self.high_threshold
        if low is not None and high is not None and low >= high:
            raise ValueError(
                f"refine.low_threshold ({low}) must be below refine.high_threshold ({high}): "
                "swap them or set both to null to choose them on dev"
            )
        if self.fallback_model is not None and ":" not in self.fallback_model:
            raise ValueError(
                f"refine.fallback_model {self.fallback_model!r} is not 'provider:model': "
                "use e.g. 'openai:gpt-4o-mini', or null to abstain"
            )
        return self


class ProbePolicy(_Component):
    """Probe: the hallucination-risk probe fitted on the current model's train-split answers."""

    items: int = Field(
        default=96, ge=8, description="Train-split items answered greedily to fit the probe."
    )
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Token budget of those answers (null: evaluate.max_new_tokens). Labels from a "
        "smaller budget teach the probe truncation, not hallucination.",
    )


class MonitorPolicy(_Component):
    """Monitor: the rules that decide loop | retrain | refit_probe | rollback | stop."""

    target_accuracy: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Stop once dev accuracy reaches this (null: no target).",
    )
    min_gain: float = Field(
        default=0.01,
        ge=0.0,
        description="Dev accuracy gain over the best version that counts as progress.",
    )
    patience: int = Field(
        default=1, ge=1, description="Cycles in a row without min_gain before the session stops."
    )
    max_cycles: int = Field(default=4, ge=1, description="Most improvement cycles.")
    max_wall_minutes: float = Field(
        default=12.0, gt=0.0, description="Wall-time budget of the whole session."
    )
    project_wall_budget: bool = Field(
        default=True,
        description="Also stop when another cycle as long as the last would overrun "
        "max_wall_minutes.",
    )
    regression_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="A version worse on dev than the best by more than this is rolled back, "
        "never promoted.",
    )
    max_retrains: int = Field(
        default=1, ge=0, description="Most retrains (same data, adjusted settings) per session."
    )
    retrain_min_examples: int = Field(
        default=16,
        ge=1,
        description="A cycle's data counts as good enough to retrain on with at least this "
        "many examples.",
    )
    drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Probe AUROC drop on fresh labels (vs its fit) that makes it stale.",
    )
    calibration_drift_threshold: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Probe calibration error (ECE) rise on fresh labels that makes it stale.",
    )
    max_probe_refits: int = Field(default=1, ge=0, description="Most probe refits per session.")
    min_probe_auroc_to_trust: float = Field(
        default=0.6,
        ge=0.5,
        le=1.0,
        description="Below this AUROC on fresh labels the probe's risk signal is discounted "
        "as near chance.",
    )
    min_risk_drop: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="A fall in mean dev risk (weighted by the probe's AUROC) that keeps a "
        "session with flat accuracy going another cycle.",
    )


class PlannerPolicy(_Component):
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


class SessionPolicy(_Component):
    """Everything an improvement session's behaviour comes from."""

    schema_version: Literal[1] = Field(default=1, description="Policy file format version.")
    task: str = Field(
        default="arithmetic",
        description="Task suite (see `autodidact tasks list`), or 'jsonl' with task_path.",
    )
    task_path: str | None = Field(default=None, description="JSONL file of a 'jsonl' task.")
    model: str = Field(
        default=DEFAULT_MODEL, description="Model name, local folder or cached hub id."
    )
    seed: int = Field(default=0, ge=0, description="Seed for splits, sampling and training.")
    store: str | None = Field(
        default=None,
        description="Session store URL: 'sqlite:///path.db' or 'redis://host:6379/0' (null: "
        "SQLite in the session folder).",
    )
    acquire: AcquirePolicy = Field(default=AcquirePolicy(), description=AcquirePolicy.__doc__)
    select: SelectPolicy = Field(default=SelectPolicy(), description=SelectPolicy.__doc__)
    optimize: OptimizePolicy = Field(default=OptimizePolicy(), description=OptimizePolicy.__doc__)
    evaluate: EvaluatePolicy = Field(default=EvaluatePolicy(), description=EvaluatePolicy.__doc__)
    refine: RefinePolicy = Field(default=RefinePolicy(), description=RefinePolicy.__doc__)
    probe: ProbePolicy = Field(default=ProbePolicy(), description=ProbePolicy.__doc__)
    monitor: MonitorPolicy = Field(default=MonitorPolicy(), description=MonitorPolicy.__doc__)
    planner: PlannerPolicy = Field(default=PlannerPolicy(), description=PlannerPolicy.__doc__)

    @model_validator(mode="after")
    def _check(self) -> SessionPolicy:
        for problem in _cross_component_problems(self):
            raise ValueError(problem)
        return self

    @property
    def probe_max_new_tokens(self) -> int:
        """The probe's answer budget: its own, else the evaluation's."""
        return self.probe.max_new_tokens or self.evaluate.max_new_tokens


def _cross_component_problems(p: SessionPolicy) -> Iterator[str]:
    if p.optimize.method == "dpo" and not p.select.pairs:
        yield (
            "optimize.method 'dpo' trains on preference pairs: set select.pairs=true or "
            "optimize.method=sft"
        )
    if p.select.max_per_prompt > p.acquire.samples_per_prompt:
        yield (
            f"select.max_per_prompt ({p.select.max_per_prompt}) exceeds acquire.samples_per_prompt "
            f"({p.acquire.samples_per_prompt}): lower it or sample more"
        )
    most = (
        p.acquire.prompts_per_cycle + p.acquire.max_synthesize_prompts
    ) * p.select.max_per_prompt
    if p.select.min_examples > most:
        yield (
            f"select.min_examples ({p.select.min_examples}) is more than a cycle can select "
            f"({most}): lower select.min_examples or raise acquire.prompts_per_cycle"
        )
    if p.task == "jsonl" and not p.task_path:
        yield "task 'jsonl' needs a file: set task_path (or pass --path FILE.jsonl)"
    if p.refine.fallback_model and p.evaluate.refine != "risk_adaptive":
        yield (
            "refine.fallback_model is used only by risk_adaptive: set "
            "evaluate.refine=risk_adaptive or drop it"
        )


# -- presets ---------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # The defaults: arithmetic improvement on the default model within 12 minutes on 2 cores.
    "default": {},
    # A CI smoke session of a few minutes on the default 135M model on 2 CPU cores.
    "quick": {
        "acquire": {"prompts_per_cycle": 16, "samples_per_prompt": 2, "max_new_tokens": 64},
        "select": {"min_examples": 1},
        "optimize": {"batch_size": 4, "max_steps": 2},
        "evaluate": {"dev_limit": 16, "test_limit": 16, "max_new_tokens": 64},
        "probe": {"items": 64},
        "monitor": {"max_cycles": 2, "patience": 2, "max_wall_minutes": 6.0, "max_retrains": 0},
    },
}


# -- resolution -------------------------------------------------------------------------


def resolve_policy(
    preset: str | None = None, file: Path | None = None, overrides: Sequence[str] = ()
) -> SessionPolicy:
    """defaults < preset < YAML file < `--set key=value` overrides, validated as a whole."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if preset is not None:
        layers.append((f"preset {preset!r}", _preset(preset)))
    if file is not None:
        layers.append((str(file), load_policy_file(file)))
    for override in overrides:
        layers.append((f"--set {override}", parse_override(override)))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return SessionPolicy.model_validate(merged)
    except ValidationError as error:
        raise PolicyError(_describe(error, layers)) from None


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        near = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise PolicyError(f"unknown preset {name!r}: {hint}(presets: {', '.join(PRESETS)})")
    return PRESETS[name]


def load_policy_file(path: Path) -> dict[str, Any]:
    """A policy YAML file as a mapping (empty file: no settings)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} not found: check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(
            f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError(
            f"{path}: a policy file is a mapping of sections (got {type(data).__name__})"
        )
    return data


def parse_override(text: str) -> dict[str, Any]:
    """`monitor.max_cycles=2` -> {"monitor": {"max_cycles": 2}}; the value is a YAML scalar.

    >>> parse_override("monitor.max_cycles=2")
    {'monitor': {'max_cycles': 2}}
    >>> parse_override("planner.monitor=openai:gpt-4o-mini")
    {'planner': {'monitor': 'openai:gpt-4o-mini'}}
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise PolicyError(f"--set expects key=value such as monitor.max_cycles=2 (got {text!r})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    cursor = nested
    *parents, leaf = key.split(".")
    for part in parents:
        cursor = cursor.setdefault(part, {})
    cursor[leaf] = value
    return nested


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win key by key; sections merge.

    >>> deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}})
    {'a': {'x': 1, 'y': 3}}
    """
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- error messages ---------------------------------------------------------------------


def valid_keys(model: type[BaseModel] = SessionPolicy, prefix: str = "") -> list[str]:
    """Every dotted key a policy accepts."""
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(valid_keys(annotation, f"{prefix}{name}."))
    return keys


def nearest_key(key: str) -> str | None:
    """The valid key a mistyped one most likely meant.

    >>> nearest_key("monitor.max_cycle")
    'monitor.max_cycles'
    >>> nearest_key("acquire.min_gain")
    'monitor.min_gain'
    """
    keys = valid_keys()
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return near[0] if near else None


def _describe(error: ValidationError, layers: Sequence[tuple[str, dict[str, Any]]]) -> str:
    errors = error.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    source = _source_of(first["loc"], layers)
    more = (
        f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        if len(errors) > 1
        else ""
    )
    return f"{source}: {_explain(first, loc)}{more}"


def _explain(error: ErrorDetails, loc: str) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        near = nearest_key(loc)
        return f"unknown key {loc!r}: " + (
            f"did you mean {near!r}?" if near else "see `autodidact policy show`"
        )
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        bound = next(iter(ctx.values()))
        text = f"must be {bounds[kind]} {bound}"
    elif kind == "literal_error":
        text = f"must be one of {ctx.get('expected')}"
    elif kind in _TYPE_WORDS:
        text = f"must be {_TYPE_WORDS[kind]}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{loc} is a section, not a value: set its keys, e.g. {_first_key(loc)}=..."
    else:
        text = error["msg"][0].lower() + error["msg"][1:]
    return f"{loc or 'policy'} {text} (got {error['input']!r})"


_TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string (quote it)",
}


def _first_key(section: str) -> str:
    return next((k for k in valid_keys() if k.startswith(section + ".")), section)


def _source_of(loc: tuple[int | str, ...], layers: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The last layer that set the offending key (or its section): where to fix it."""
    if not loc:
        return "policy"
    for name, layer in reversed(layers):
        node: Any = layer
        for part in loc:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return name
    return "policy"


# -- schema and dump ----------------------------------------------------------------------


def policy_schema() -> dict[str, Any]:
    """JSON Schema of the policy (what any LangGraph tool reads from `context_schema`)."""
    return SessionPolicy.model_json_schema()


def dump_policy(policy: SessionPolicy) -> str:
    """The policy as YAML, in field order: loadable again with `resolve_policy(file=...)`."""
    return yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False)
