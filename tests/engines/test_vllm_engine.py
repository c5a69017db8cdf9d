"""The vLLM engine beside the transformers engine on the default model (greedy parity up to
near-ties), and how a session chooses its engine (`engine: transformers | vllm`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from cli.app import make_app
from cli.common import Loaders
from engines.base import Sample, SamplingParams
from engines.factory import load_engine
from engines.loading import DEFAULT_MODEL, EngineNotInstalledError, engine_problem
from graph.policy import PolicyError, resolve_policy
from graph.versions import ModelVersions, load_engine_from, version_loader
from tasks import get_task
from tests.vllm_support import require_vllm

NEAR_TIE = 0.01  # top-2 log-probability gap under which the engines may pick differently
PARITY_TOKENS = 32


def parity_prompts() -> list[str]:
    """A fixed set: the first 12 capitals questions and 12 arithmetic train problems."""
    capitals = [item.prompt for item in get_task("capitals").items[:12]]
    sums = [item.prompt for item in get_task("arithmetic").split("train", seed=0)[:12]]
    return capitals + sums


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two answers differ (one may end earlier), or None.

    >>> first_difference([1, 2, 3], [1, 2, 3]), first_difference([1, 2, 3], [1, 5])
    (None, 1)
    >>> first_difference([1, 2], [1, 2, 3])
    2
    """
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def top2_gap(engine: Any, prompt: str, prefix: list[int]) -> float:
    """log p(top-1) - log p(top-2) of the transformers model's next token after the prompt
    and the answer's first tokens `prefix`."""
    ids = engine._encode([prompt])["input_ids"][0].tolist() + prefix
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids], device=engine.model.device)).logits
    top = torch.log_softmax(logits[0, -1].float(), dim=-1).topk(2).values
    return float(top[0] - top[1])


@pytest.fixture(scope="module")
def default_vllm() -> Any:
    require_vllm()
    engine = load_engine(DEFAULT_MODEL, "vllm")
    yield engine
    engine.close()


@pytest.mark.vllm
@pytest.mark.integration
def test_greedy_answers_equal_the_transformers_engines_up_to_near_ties(
    default_vllm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same prompts, greedy: every answer equals the transformers engine's (its tokens,
    and its log-probabilities within 1e-3), or first differs where that model's top two
    tokens are within NEAR_TIE of each other. Divergences are printed."""
    prompts = parity_prompts()
    transformers_engine = default_vllm.prefill  # HFEngine.load of the same folder
    ours = default_vllm.generate(
        prompts, SamplingParams(max_new_tokens=PARITY_TOKENS), capture=False
    )
    theirs = transformers_engine.generate(
        prompts, SamplingParams(max_new_tokens=PARITY_TOKENS), capture=False
    )
    divergences = []
    for prompt, mine, reference in zip(prompts, ours, theirs, strict=True):
        a: Sample = mine.samples[0]
        b: Sample = reference.samples[0]
        k = first_difference(a.token_ids, b.token_ids)
        shared = len(a.token_ids) if k is None else k
        assert a.logprobs[:shared] == pytest.approx(b.logprobs[:shared], abs=1e-3), prompt
        if k is not None:
            divergences.append((prompt, k, top2_gap(transformers_engine, prompt, b.token_ids[:k])))
    with capsys.disabled():  # the report shows in every run, passed or not
        print(f"\ngreedy parity: {len(prompts) - len(divergences)}/{len(prompts)} identical")
        for prompt, k, gap in divergences:
            print(f"  diverges at token {k}, top-2 gap {gap:.5f}: {prompt!r}")
    assert all(gap < NEAR_TIE for _, _, gap in divergences), divergences


@pytest.mark.vllm
@pytest.mark.integration
def test_generation_states_and_fingerprint_are_the_transformers_copys(default_vllm: Any) -> None:
    """Probe features and the fingerprint come from transformers over the same weights, so
    a probe fitted with either engine is valid for the other."""
    prompts = parity_prompts()[:3]
    (generation, *_) = default_vllm.generate(prompts, SamplingParams(max_new_tokens=2))
    expected = default_vllm.prefill.hidden_states(prompts)[0].query_token
    assert generation.states is not None
    torch.testing.assert_close(generation.states.query_token, expected)
    assert default_vllm.fingerprint == load_engine(DEFAULT_MODEL).fingerprint


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


@pytest.mark.vllm
@pytest.mark.integration
@pytest.mark.parametrize("schema", [ANSWER_SCHEMA, {}], ids=["json_schema", "json_object"])
def test_answers_under_a_json_schema_parse_with_vllms_guided_decoding(
    default_vllm: Any, schema: dict[str, Any]
) -> None:
    """`json_schema` (what `serve` passes for a request's `response_format`, and so what a
    planner over HTTP gets) reaches vLLM's structured outputs: every greedy and sampled
    answer of the small default model is one JSON object, of the schema when one is given,
    although nothing in the prompts asks for JSON (unconstrained, they are prose). Any
    object (`{}`) may run past the token budget inside a string: such an answer only has
    to start as an object."""
    prompts = [item.prompt for item in get_task("arithmetic").split("train", seed=0)[:4]]
    text = json.dumps(schema)
    greedy = SamplingParams(max_new_tokens=48, json_schema=text)
    sampled = SamplingParams(n=2, temperature=1.0, max_new_tokens=48, json_schema=text)
    free = default_vllm.generate(prompts, SamplingParams(max_new_tokens=48), capture=False)
    assert not any(is_json_object(g.samples[0].text) for g in free), "the prompts ask for prose"
    finished = 0
    for params in (greedy, sampled):
        for generation in default_vllm.generate(prompts, params, capture=False):
            for sample in generation.samples:
                if sample.finish_reason == "length" and not schema:
                    assert sample.text.lstrip().startswith("{"), sample.text
                    continue
                finished += 1
                assert is_json_object(sample.text), sample.text
                if schema:
                    parsed = json.loads(sample.text)
                    assert set(parsed) == {"answer", "sure"}, sample.text
                    assert type(parsed["answer"]) is int, sample.text
                    assert type(parsed["sure"]) is bool, sample.text
    assert finished >= (12 if schema else 1), "answers that ended on their own"


def is_json_object(text: str) -> bool:
    """Whether `text` is one JSON object.

    >>> is_json_object('{"a": 1}'), is_json_object("The answer is 4."), is_json_object("[1]")
    (True, False, False)
    """
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


# ------------------------------------------------------------------ choosing the engine


def test_policy_takes_the_engine_and_names_the_choices() -> None:
    assert resolve_policy(None, None, []).engine == "transformers"
    assert resolve_policy("quick", None, ["engine=vllm"]).engine == "vllm"
    with pytest.raises(PolicyError, match=r"transformers.*vllm"):
        resolve_policy(None, None, ["engine=tgi"])


def test_an_absent_vllm_is_one_line_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    problem = engine_problem("vllm")
    assert problem is not None and "make install-vllm" in problem
    assert engine_problem("transformers") is None
    with pytest.raises(EngineNotInstalledError, match="make install-vllm"):
        load_engine("any-model", "vllm")
    with pytest.raises(EngineNotInstalledError):
        version_loader("vllm")(Path("versions/v1/merged"))
    assert version_loader("transformers") is load_engine_from


def test_run_with_an_absent_engine_stops_before_writing_anything(tmp_path: Path) -> None:
    def no_engine(model: str) -> Any:
        raise AssertionError("no engine may load")

    loaders = Loaders(
        load_engine=no_engine,
        load_vllm_engine=no_engine,
        engine_problem=lambda kind: f"engine {kind!r} is absent: make install-vllm",
    )
    root = tmp_path / "runs"
    result = CliRunner().invoke(
        make_app(loaders), ["run", "--preset", "quick", "--set", "engine=vllm", "--root", str(root)]
    )
    assert result.exit_code == 2
    assert "engine 'vllm' is absent: make install-vllm" in result.output
    assert not root.exists()


def test_loaders_pick_the_engine_by_kind() -> None:
    loaders = Loaders(load_engine=lambda m: f"hf:{m}", load_vllm_engine=lambda m: f"vllm:{m}")  # type: ignore[arg-type,return-value]
    assert loaders.engine("m") == "hf:m"
    assert loaders.engine("m", "vllm") == "vllm:m"


def test_a_dropped_version_engine_is_closed(tmp_path: Path) -> None:
    """One trained version in memory at a time: loading another closes the one before (a
    vLLM engine's processes end then, not whenever it is garbage-collected)."""

    class Closable:
        def __init__(self, path: Path) -> None:
            self.path, self.closed = path, False

        def close(self) -> None:
            self.closed = True

    base = Closable(tmp_path)
    versions = ModelVersions(base, tmp_path, load_engine=Closable)  # type: ignore[arg-type]
    state: Any = {"versions": {v: {"path": str(tmp_path / v)} for v in ("v1", "v2")}}
    first = versions.engine(state, "v1")
    assert versions.engine(state, "v1") is first and not first.closed  # type: ignore[attr-defined]
    second = versions.register("v2", tmp_path / "v2")
    assert first.closed and not second.closed  # type: ignore[attr-defined]
    assert versions.engine(state, "v0") is base and not base.closed
