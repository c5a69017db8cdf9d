"""The session policy: precedence, presets, one-line errors naming the field and the fix,
JSON Schema, YAML round trip, and use as LangGraph's runtime context."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from pydantic import ValidationError

from graph.policy import (
    PRESETS,
    PolicyError,
    SessionPolicy,
    dump_policy,
    nearest_key,
    parse_override,
    policy_schema,
    resolve_policy,
    valid_keys,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_default_preset() -> None:
    assert resolve_policy() == SessionPolicy() == resolve_policy("default")
    p = SessionPolicy()
    assert (p.acquire.prompts_per_cycle, p.acquire.samples_per_prompt) == (64, 4)
    assert (p.acquire.max_new_tokens, p.monitor.max_cycles, p.monitor.max_wall_minutes) == (
        96,
        4,
        12,
    )


def test_quick_preset_is_small() -> None:
    quick = resolve_policy("quick")
    assert quick.acquire.prompts_per_cycle * quick.acquire.samples_per_prompt <= 32
    assert quick.monitor.max_cycles == 2 and quick.evaluate.dev_limit == 16


def test_honesty_preset_teaches_abstention_on_capitals() -> None:
    honest = resolve_policy("honesty")
    assert (honest.task, honest.select.strategy) == ("capitals", "learn_abstention")
    assert (honest.acquire.min_risk, honest.acquire.max_risk) == (0.0, 1.0)
    assert (honest.monitor.score, honest.monitor.accuracy_floor) == ("honesty", 0.85)
    assert honest.acquire.max_new_tokens == honest.evaluate.max_new_tokens == 32
    assert honest.monitor.max_wall_minutes <= 12
    # the planner's select plan carries the abstention text refine and evaluate use
    from agents.selection import select_rules

    assert select_rules(honest)["abstention_text"] == honest.refine.abstention_text


def test_policy_show_prints_the_honesty_preset() -> None:
    from typer.testing import CliRunner

    from cli.app import make_app

    result = CliRunner().invoke(make_app(), ["policy", "show", "--preset", "honesty"])
    assert result.exit_code == 0, result.output
    assert "strategy: learn_abstention" in result.output
    assert "score: honesty" in result.output


def test_precedence_defaults_preset_file_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "monitor:\n  max_cycles: 3\n  patience: 1\nseed: 7\n")
    from_file = resolve_policy("quick", path)
    assert from_file.monitor.max_cycles == 3  # file beats preset
    assert from_file.acquire.prompts_per_cycle == 16  # preset beats defaults
    assert from_file.monitor.min_gain == 0.01  # defaults where nobody spoke
    final = resolve_policy("quick", path, ["monitor.max_cycles=1", "seed=9"])
    assert (final.monitor.max_cycles, final.seed, final.monitor.patience) == (1, 9, 1)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("monitor.max_cycles=2", {"monitor": {"max_cycles": 2}}),
        ("evaluate.dev_limit=null", {"evaluate": {"dev_limit": None}}),
        ("select.dedupe=false", {"select": {"dedupe": False}}),
        ("planner.monitor=openai:gpt-4o-mini", {"planner": {"monitor": "openai:gpt-4o-mini"}}),
        ("refine.fallback_model=", {"refine": {"fallback_model": None}}),
    ],
)
def test_overrides_are_yaml_scalars(override: str, expected: dict[str, Any]) -> None:
    assert parse_override(override) == expected


def test_exponent_without_dot_still_a_number() -> None:
    # PyYAML reads `1e-4` as a string; the policy still takes it as a float.
    assert resolve_policy(overrides=["optimize.learning_rate=1e-4"]).optimize.learning_rate == 1e-4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["monitor.max_cycle=2"],
            "--set monitor.max_cycle=2: unknown key 'monitor.max_cycle': "
            "did you mean 'monitor.max_cycles'?",
        ),
        (
            ["acquire.min_gain=0.1"],
            "--set acquire.min_gain=0.1: unknown key 'acquire.min_gain': "
            "did you mean 'monitor.min_gain'?",
        ),
        (["seeds=1"], "--set seeds=1: unknown key 'seeds': did you mean 'seed'?"),
        (
            ["monitor.max_cycles=0"],
            "--set monitor.max_cycles=0: monitor.max_cycles must be >= 1 (got 0)",
        ),
        (
            ["evaluate.dev_limit=many"],
            "--set evaluate.dev_limit=many: evaluate.dev_limit must be an integer (got 'many')",
        ),
        (
            ["optimize.method=ppo"],
            "--set optimize.method=ppo: optimize.method must be one of 'sft', 'dpo' or 'grpo' (got 'ppo')",
        ),
        (["monitor=3"], "--set monitor=3: monitor is a section, not a value: set its keys"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(overrides: list[str], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_policy(overrides=overrides)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "monitor:\n  max_cycle: 2\n")
    with pytest.raises(
        PolicyError,
        match=r"policy.yaml: unknown key 'monitor.max_cycle': did you mean 'monitor.max_cycles'\?",
    ):
        resolve_policy(file=path)


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["acquire.min_risk=0.8", "acquire.max_risk=0.2"], "widen the difficulty band"),
        (["acquire.temperature=0"], "set acquire.temperature > 0 or acquire.samples_per_prompt=1"),
        (["acquire.synthesize_prompts=50"], "raise the cap or ask for fewer"),
        (["optimize.learning_rate=0.01"], "move the rate or the bounds"),
        (["optimize.epochs=6"], "raise max_epochs or lower epochs"),
        (
            ["optimize.method=dpo", "select.pairs=false"],
            "set select.pairs=true or optimize.method=sft",
        ),
        (["optimize.method=grpo", "acquire.samples_per_prompt=1"], "samples_per_prompt >= 2"),
        (["optimize.method=grpo", "cluster.backend=ray"], "use cluster.backend=local"),
        (["select.max_per_prompt=8"], "lower it or sample more"),
        (
            ["select.min_examples=1000"],
            "lower select.min_examples or raise acquire.prompts_per_cycle",
        ),
        (["refine.low_threshold=0.8", "refine.high_threshold=0.2"], "swap them"),
        (["refine.fallback_model=gpt4"], "use e.g. 'openai:gpt-4o-mini'"),
        (["refine.fallback_model=openai:gpt-4o-mini"], "set evaluate.refine=risk_adaptive"),
        (["refine.gate_rule=accuracy_floor"], "set monitor.accuracy_floor (e.g. 0.85)"),
        (["task=jsonl"], "set task_path"),
        (["planner.select=gpt4"], "'provider:model' such as 'openai:gpt-4o-mini'"),
    ],
)
def test_cross_field_errors_say_the_fix(overrides: list[str], fix: str) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_policy(overrides=overrides)
    assert fix in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_preset_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"unknown preset 'quik': did you mean 'quick'\?"):
        resolve_policy("quik")
    with pytest.raises(PolicyError, match="not found"):
        resolve_policy(file=tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="line 3: not valid YAML"):
        resolve_policy(file=write(tmp_path, "monitor:\n  max_cycles: [1\n"))
    with pytest.raises(PolicyError, match="a policy file is a mapping"):
        resolve_policy(file=write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(PolicyError, match="--set expects key=value"):
        resolve_policy(overrides=["monitor.max_cycles"])
    assert resolve_policy(file=write(tmp_path, "")) == SessionPolicy()


def test_dump_round_trips(tmp_path: Path) -> None:
    policy = resolve_policy(
        "quick", overrides=["planner.monitor=self", "monitor.target_accuracy=0.8"]
    )
    assert resolve_policy(file=write(tmp_path, dump_policy(policy))) == policy


def test_every_field_has_help_text() -> None:
    schema = policy_schema()
    sections = [schema, *schema["$defs"].values()]
    for section in sections:
        for name, field in section["properties"].items():
            if "$ref" in field:  # a section: its help is the referenced definition's
                field = schema["$defs"][field["$ref"].rsplit("/", 1)[-1]]
            assert field.get("description"), f"{section['title']}.{name} has no description"
    assert schema["additionalProperties"] is False


def test_nearest_key_and_valid_keys() -> None:
    assert "monitor.max_cycles" in valid_keys() and "planner.monitor" in valid_keys()
    assert nearest_key("optimize.learnin_rate") == "optimize.learning_rate"
    assert nearest_key("zzzzzz") is None


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        SessionPolicy().monitor.max_cycles = 9  # type: ignore[misc]


def flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_preset_resolves_to_its_own_settings() -> None:
    for name, preset in PRESETS.items():
        resolved = flat(resolve_policy(name).model_dump(mode="json"))
        assert flat(preset).items() <= resolved.items(), name
    assert flat(PRESETS["quick"])  # a preset with settings


class _State(TypedDict, total=False):
    seen: int


def test_langgraph_reads_the_policy_as_runtime_context() -> None:
    def node(state: _State, runtime: Runtime[SessionPolicy]) -> _State:
        return {"seen": runtime.context.monitor.max_cycles}

    graph = StateGraph(_State, context_schema=SessionPolicy)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    app = graph.compile()
    policy = resolve_policy("quick", overrides=["monitor.max_cycles=3"])
    assert app.invoke({}, context=policy) == {"seen": 3}
    # a plain dict is coerced (and validated) by LangGraph
    assert app.invoke({}, context={"monitor": {"max_cycles": 2}}) == {"seen": 2}
