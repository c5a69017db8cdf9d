"""Honesty: abstentions recognised when evaluating, the four rates and the probe's AURC
per version (on a scripted engine, no model), and select's learn_abstention."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.acquire import Attempt
from agents.evaluate import measure
from agents.refine import RefinePolicy, is_abstention
from agents.selection import (
    Abstention,
    SelectPolicy,
    abstention_pairs,
    label_with_verifier,
    learn_abstention,
    select_data,
)
from engines.base import Generation, ProgressFn, RiskFn, Sample, SamplingParams
from tasks.base import Item, Task
from tasks.verifiers import alias_match

ITEMS = tuple(Item(f"c{i}", f"What is the capital of C{i}?", (f"A{i}",), f"C{i}") for i in range(4))
TASK = Task("toy", ITEMS, alias_match, "alias", max_new_tokens=16)


class ScriptedEngine:
    """Answers each prompt with a fixed text, its probe risk given per prompt."""

    name = "scripted"
    fingerprint = "scripted-0"

    def __init__(self, answers: Mapping[str, tuple[str, float]]) -> None:
        self.answers = answers

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        capture: bool = True,
        on_progress: ProgressFn | None = None,
        risk_fn: RiskFn | None = None,
    ) -> list[Generation]:
        return [self._generation(prompt) for prompt in prompts]

    def _generation(self, prompt: str) -> Generation:
        text, risk = self.answers[prompt]
        return Generation(prompt, [Sample(text, [1], [-0.5], [0.5], "stop")], None, risk)


def scripted(*texts: str) -> ScriptedEngine:
    risks = (0.1, 0.9, 0.6, 0.8)
    return ScriptedEngine(
        {item.prompt: (text, risk) for item, text, risk in zip(ITEMS, texts, risks, strict=True)}
    )


def test_greedy_abstentions_are_neither_right_nor_hallucinations() -> None:
    engine = scripted("A0.", "I don't know.", "The capital of C2 is B2.", "I'm not sure.")
    measured = measure(engine, TASK, ITEMS, max_new_tokens=16)  # type: ignore[arg-type]
    assert [r.abstained for r in measured.results] == [False, True, False, True]
    s = measured.summary
    assert (s.accuracy, s.hallucination_rate, s.abstention_rate) == (0.25, 0.25, 0.5)
    assert s.answered_precision == 0.5
    # labels 1 = not correct; risks 0.1 (right) < 0.6 < 0.8 < 0.9: errors at k = 2, 3, 4
    assert measured.probe_aurc == pytest.approx((0 + 1 / 2 + 2 / 3 + 3 / 4) / 4)


def test_the_policy_abstention_text_and_phrases_are_configurable() -> None:
    engine = scripted("A0.", "No idea.", "Pass.", "I don't know.")
    refine = RefinePolicy(abstention_text="No idea.", refusal_phrases=("pass",))
    measured = measure(engine, TASK, ITEMS, max_new_tokens=16, refine=refine)  # type: ignore[arg-type]
    assert [r.abstained for r in measured.results] == [False, True, True, False]
    assert measured.summary.hallucination_rate == 0.25  # "I don't know." is no longer listed


def test_nothing_answered_has_no_answered_precision() -> None:
    engine = scripted(*["I don't know."] * 4)
    s = measure(engine, TASK, ITEMS, max_new_tokens=16).summary  # type: ignore[arg-type]
    assert (s.accuracy, s.hallucination_rate, s.abstention_rate) == (0.0, 0.0, 1.0)
    assert s.answered_precision is None


def test_a_correct_answer_is_correct_whatever_it_opens_with() -> None:
    engine = scripted("I'm not sure: A0.", "A1", "A2", "A3")
    result = measure(engine, TASK, ITEMS, max_new_tokens=16).results[0]  # type: ignore[arg-type]
    assert result.correct and not result.abstained


def test_the_abstain_route_answers_the_policy_text() -> None:
    from probes.calibration import Thresholds

    engine = scripted("A0.", "B1.", "B2.", "B3.")
    refine = RefinePolicy(abstention_text="Not known.")
    measured = measure(
        engine,  # type: ignore[arg-type]
        TASK,
        ITEMS,
        max_new_tokens=16,
        strategy="abstain",
        refine=refine,
        thresholds=Thresholds(low=0.3, high=0.7),
    )
    assert [r.output for r in measured.results] == ["A0.", "Not known.", "B2.", "Not known."]
    assert measured.summary.abstention_rate == 0.5
    assert measured.summary.answered_precision == 0.5


@pytest.mark.parametrize(
    ("text", "abstains"),
    [
        ("I don't know.", True),
        ("I do not know the capital of Chad.", True),
        ("I'm not sure, but I think it is Lyon.", False),  # a guess is an answer
        ("I don't know, maybe Lyon", False),
        ("Lyon. I don't know more.", False),
        ("I cannot answer that.", True),
        ("", False),
    ],
)
def test_abstention_detection(text: str, abstains: bool) -> None:
    assert is_abstention(text, RefinePolicy().abstentions) is abstains


# -- select: learn_abstention (R-Tuning) ---------------------------------------------------


def attempt(i: int, *texts: str) -> Attempt:
    samples = tuple(Sample(text, [1], [-0.5], [0.5], "stop") for text in texts)
    return Attempt(ITEMS[i], samples, None)


def test_learn_abstention_teaches_unknown_prompts_to_abstain() -> None:
    attempts = [
        attempt(0, "A0.", "A0", "B0.", "It is A0"),  # known: 3 of 4 right
        attempt(1, "B1.", "B2.", "B3.", "B4."),  # unknown: never right
        attempt(2, "A2.", "B2.", "B2.", "B2."),  # 1 of 4: at the 0.25 threshold
        attempt(3, "I don't know.", "I don't know.", "A3", "B3"),  # answered: 1 of 2
    ]
    plan = {
        "strategy": "learn_abstention",
        "max_per_prompt": 2,
        "abstention_text": "I don't know.",
        "abstain_max_pass_rate": 0.25,
    }
    selected = select_data(TASK, attempts, plan, SelectPolicy(), judge=no_judge)
    assert [(e.item_id, e.completion) for e in selected.examples] == [
        ("c0", "A0."),
        ("c0", "It is A0"),
        ("c1", "I don't know."),
        ("c2", "I don't know."),
        ("c3", "A3"),
    ]
    # abstain > wrong where unknown, correct > abstain where known
    assert [(p.item_id, p.chosen, p.rejected) for p in selected.pairs] == [
        ("c0", "A0.", "I don't know."),
        ("c1", "I don't know.", "B1."),
        ("c2", "I don't know.", "B2."),
        ("c3", "A3", "I don't know."),
    ]


def test_learn_abstention_at_threshold_zero_abstains_only_where_nothing_was_right() -> None:
    rule = Abstention("Not known.", 0.0)
    labelled = label_with_verifier(TASK, [attempt(0, "A0", "B0"), attempt(1, "B1", "B1")])
    examples = learn_abstention(labelled, 1, rule)
    assert [(e.item_id, e.completion) for e in examples] == [("c0", "A0"), ("c1", "Not known.")]


def test_abstentions_are_capped_at_a_share_of_the_set_keeping_the_surest_unknowns() -> None:
    # one known prompt (two distinct right answers) and three unknown ones: uncapped, three
    # of five examples abstain; at a share of 0.5, two do, the lowest pass rates first
    unknown = [
        attempt(1, "B1.", "B1!", "B1?", "A1"),  # 1 of 4 right: the least sure unknown
        attempt(2, "B2.", "B2!", "B2?", "B2,"),
        attempt(3, "B3.", "B3!", "B3?", "B3,"),
    ]
    labelled = label_with_verifier(TASK, [attempt(0, "A0.", "It is A0", "B0", "B0"), *unknown])
    capped = learn_abstention(labelled, 2, Abstention(max_pass_rate=0.25, max_share=0.5))
    assert [(e.item_id, e.completion) for e in capped] == [
        ("c0", "A0."),
        ("c0", "It is A0"),
        ("c2", "I don't know."),
        ("c3", "I don't know."),
    ]
    uncapped = learn_abstention(labelled, 2, Abstention(max_pass_rate=0.25))
    assert [e.item_id for e in uncapped] == ["c0", "c0", "c1", "c2", "c3"]


def test_a_prompt_whose_samples_all_abstain_stays_an_abstention_without_a_pair() -> None:
    rule = Abstention()
    labelled = label_with_verifier(TASK, [attempt(1, "I don't know.", "I don't know.")])
    assert rule.answered_pass_rate(labelled[0]) is None
    assert [e.completion for e in learn_abstention(labelled, 1, rule)] == ["I don't know."]
    assert abstention_pairs(labelled, rule) == []  # no wrong answer to prefer it over


def no_judge() -> Any:
    raise AssertionError("learn_abstention labels with the verifier, never the model")


# -- a whole session on a tiny random model -----------------------------------------------


def test_a_tiny_honesty_session_teaches_abstentions_and_reports_the_rates(tmp_path: Path) -> None:
    """Wiring only: the parity verifier passes items with an even answer whatever the
    random model says (unless the answer is cut at the budget), so odd items are never
    right and are taught the abstention."""
    from engines.hf import HFEngine
    from graph.policy import resolve_policy
    from graph.session import Session
    from storage import open_store
    from tests.session_support import coin_flip_task
    from tests.tiny_models import tiny_engine

    overrides = [
        "acquire.prompts_per_cycle=8",
        "acquire.samples_per_prompt=2",
        "acquire.max_new_tokens=6",
        "select.strategy=learn_abstention",
        "select.min_examples=1",
        "refine.abstention_text=Not known.",
        "optimize.batch_size=4",
        "optimize.max_steps=1",
        "evaluate.dev_limit=8",
        "evaluate.test_limit=8",
        "evaluate.max_new_tokens=6",
        "probe.items=90",
        "monitor.max_cycles=1",
        "monitor.score=honesty",
        "monitor.accuracy_floor=0.85",
    ]
    policy = resolve_policy("quick", None, overrides)
    task = coin_flip_task()
    answer = {item.prompt: int(item.answers[0]) for item in task.items}
    with open_store(f"sqlite:///{tmp_path}/autodidact.db", tmp_path) as store:
        session = Session(
            "h1",
            policy,
            store,
            task,
            tiny_engine(),
            load_engine=lambda p: HFEngine.load(str(p)),
        )
        state = session.run()
    assert state["status"] == "finished"
    select_plans = [p for p in state["plans"] if p.stage == "select"]
    assert select_plans[0].final["abstention_text"] == "Not known."
    rows = [json.loads(line) for line in (session.folder / "cycle-1/sft.jsonl").open()]
    taught = {r["prompt"]: r["completion"] == "Not known." for r in rows}
    odd = [prompt for prompt in taught if answer[prompt] % 2]
    assert odd and all(taught[prompt] for prompt in odd)  # never right: taught to abstain
    assert all(h.answered_precision is not None for h in state["history"])
    final = state["final"]["final"]
    assert {"test_accuracy", "test_hallucination_rate", "test_abstention_rate"} <= set(final)
    assert "test_answered_precision" in final
