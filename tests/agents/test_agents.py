"""Stage agents on the tiny engine and on hand-made samples: selection, refinement, acquire."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from agents.acquire import (
    Attempt,
    choose_prompts,
    guided_prompts,
    probe_depth,
    synthesize_items,
)
from agents.refine import refine_answers
from agents.selection import (
    correct_only,
    dedupe,
    label_with_verifier,
    preference_pairs,
    risk_weighted,
)
from engines.base import Generation, ProgressFn, PromptStates, RiskFn, Sample, SamplingParams
from probes.calibration import Thresholds, choose_thresholds
from probes.features import FeatureSpec
from tasks import get_task
from tasks.base import Item
from tasks.verifiers import number_key
from tests.tiny_models import tiny_engine


def sample(text: str, finish: str = "stop") -> Sample:
    return Sample(text, [1], [-0.5], [0.2], finish)  # type: ignore[arg-type]


ITEM = Item("a1", "What is 2 + 3?", ("5",), "2+3")
TASK = get_task("arithmetic", n=20)


def test_truncated_samples_never_count_as_correct() -> None:
    attempt = Attempt(ITEM, (sample("2 + 3 = 5"), sample("2 + 3 = 5", "length"), sample("6")), 0.4)
    (labelled,) = label_with_verifier(TASK, [attempt])
    assert labelled.correct == (True, False, False)


def test_correct_only_keeps_distinct_correct_samples_and_pairs_need_both() -> None:
    attempt = Attempt(ITEM, (sample("5"), sample("5."), sample("It is 5"), sample("7")), None)
    labelled = label_with_verifier(TASK, [attempt])
    examples = correct_only(labelled, max_per_prompt=4)
    assert [e.completion for e in examples] == ["5", "It is 5"]  # "5." normalizes to "5"
    assert len(preference_pairs(labelled)) == 1
    all_right = label_with_verifier(TASK, [Attempt(ITEM, (sample("5"),), None)])
    assert preference_pairs(all_right) == []


def test_risk_weighted_prefers_uncertain_solved_prompts() -> None:
    easy = Attempt(
        Item("e", "What is 1 + 1?", ("2",), "1+1"), (sample("2"), sample("1 + 1 = 2")), 0.1
    )
    hard = Attempt(
        Item("h", "What is 9 + 9?", ("18",), "9+9"), (sample("18"), sample("9 + 9 = 18")), 0.9
    )
    unsolved = Attempt(Item("u", "What is 8 + 8?", ("16",), "8+8"), (sample("15"),), 0.99)
    examples = risk_weighted(label_with_verifier(TASK, [easy, hard, unsolved]), max_per_prompt=1)
    assert [e.item_id for e in examples] == ["h", "h", "e"]


def test_dedupe_drops_repeats() -> None:
    examples = correct_only(label_with_verifier(TASK, [Attempt(ITEM, (sample("5"),), None)] * 2), 1)
    assert len(dedupe(examples)) == 1


def test_thresholds_reach_the_target_precision_on_dev() -> None:
    risks = [0.1, 0.2, 0.3, 0.6, 0.8, 0.9]
    correct = [True, True, True, False, True, False]
    chosen = choose_thresholds(risks, correct, target_precision=0.95)
    answered = [ok for r, ok in zip(risks, correct, strict=True) if r <= chosen.low]
    assert answered and all(answered)
    assert chosen.low <= chosen.high


def test_risk_adaptive_routes_by_risk_on_a_real_engine() -> None:
    engine = tiny_engine()
    prompts = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]
    risks = itertools.cycle([0.1, 0.5, 0.9])  # the greedy pass scores prompts in order
    answers = refine_answers(
        engine,
        prompts,
        strategy="risk_adaptive",
        thresholds=Thresholds(0.3, 0.7),
        k=3,
        temperature=1.0,
        max_new_tokens=4,
        key=number_key,
        risk_fn=lambda _states: next(risks),
    )
    assert [a.route for a in answers] == ["greedy", "self_consistency", "abstain"]
    assert answers[2].abstained and answers[2].risk == pytest.approx(0.9)


def test_risk_adaptive_uses_the_fallback_above_the_high_threshold() -> None:
    (answer,) = refine_answers(
        tiny_engine(),
        ["What is 1 + 1?"],
        strategy="risk_adaptive",
        thresholds=Thresholds(0.3, 0.7),
        k=2,
        temperature=1.0,
        max_new_tokens=4,
        key=number_key,
        fallback=lambda prompt: "2",
        risk_fn=lambda _states: 0.95,
    )
    assert (answer.route, answer.text) == ("fallback", "2")


class LayerOneScorer:
    """A stand-in probe reading layer 1: risk 0.9 or 0.1 by the sign of one coordinate."""

    spec = FeatureSpec("query_token", (1,))

    def __call__(self, states: PromptStates) -> float:
        return 0.9 if float(states.query_token[1, 1]) > 0 else 0.1


def test_guided_prompts_score_the_pool_to_the_probe_layer_and_keep_the_band() -> None:
    engine = tiny_engine()
    pool = [Item(str(i), f"What is {i} + 1?", (str(i + 1),), str(i)) for i in range(8)]
    scorer = LayerOneScorer()
    plan = {"prompts": 3, "min_risk": 0.5, "max_risk": 1.0}
    kept, scored = guided_prompts(engine, pool, plan, scorer)
    risks = [scorer(s) for s in engine.hidden_states([i.prompt for i in pool])]  # full depth
    in_band = [i.id for i, r in zip(pool, risks, strict=True) if r >= 0.5]
    assert scored == 8 and [i.id for i in kept] == in_band[:3]


def test_probe_depth_is_the_deepest_layer_a_probe_names() -> None:
    assert probe_depth(LayerOneScorer()) == 1
    assert probe_depth(lambda _states: 0.5) is None  # unknown: every layer


def test_without_a_probe_or_a_larger_pool_the_draw_is_uniform() -> None:
    engine = tiny_engine()
    pool = [Item(str(i), f"q{i}", ("a",), str(i)) for i in range(6)]
    plan = {"prompts": 4, "min_risk": 0.0, "max_risk": 1.0}
    assert guided_prompts(engine, pool, plan) == (pool[:4], 0)  # no probe
    assert guided_prompts(engine, pool[:4], plan, LayerOneScorer()) == (pool[:4], 0)  # no choice


class ScriptedWriter:
    """An engine whose i-th prompt of a call gets the i-th scripted reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        return [Generation(p, [sample(r)]) for p, r in zip(prompts, self.replies, strict=True)]


def test_self_instruct_keeps_only_oracle_labelled_prompts_outside_held_out_groups() -> None:
    task = get_task("arithmetic", n=60)
    train, dev = task.split("train"), task.split("dev")
    held_out = frozenset(i.group for s in ("dev", "test") for i in task.split(s))
    a, b, c = train[:3]
    replies = [
        f"Sure! {a.prompt}\nMore text",
        dev[0].prompt,  # a held-out problem
        "What is the meaning of life?",  # no oracle label
        a.prompt,  # a repeat
        f"- {b.prompt}",
        c.prompt,
    ]
    made = synthesize_items(
        ScriptedWriter(replies),  # type: ignore[arg-type]
        task,
        train,
        3,  # asks the writer for 2 x 3 prompts
        blocked_groups=held_out,
        seed=0,
    )
    assert dev[0].group in held_out
    assert [(i.id, i.prompt, i.answers, i.group) for i in made] == [
        (f"synth-0-{k}", i.prompt, i.answers, i.group) for k, i in enumerate((a, b, c))
    ]


def test_choose_prompts_differs_across_cycles() -> None:
    train = get_task("arithmetic", n=100).split("train")
    assert choose_prompts(train, 10, cycle=1, seed=0) != choose_prompts(train, 10, cycle=2, seed=0)
