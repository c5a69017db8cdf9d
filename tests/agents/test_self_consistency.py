"""Self-consistency compares the task's extracted answers: in the probe's baseline, in
refine's vote, and the verifier a task is judged by (`--verifier`, `task_verifier`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.refine import majority
from cli.app import make_app
from engines.base import Sample
from graph.policy import PolicyError, resolve_policy
from probes.artifact import Probe
from probes.baselines import disagreement_risk
from probes.data import ProbeData, collect
from probes.evaluation import evaluate
from probes.split import grouped_split
from probes.sweep import sweep
from tasks import get_task
from tasks.verifiers import final_number, normalize, number_key
from tests.probe_fakes import FakeEngine, toy_task

RIGHT = ("A{n}.", "The capital is A{n}.", "It is A{n}, I think", "a{n} for sure")
WRONG = ("B0.", "Maybe B1", "It is B2", "C3?")


def free_form(n: str, right: int) -> list[str]:
    """Four answers worded differently, `right` of them naming the reference A{n}."""
    return [text.format(n=n) for text in RIGHT[:right]] + list(WRONG[: 4 - right])


def test_clustered_disagreement_on_free_form_answers_is_not_constant() -> None:
    task = toy_task(3)
    rights = (4, 3, 1)
    sampled = [
        free_form(item.answers[0][1:], right)
        for item, right in zip(task.items, rights, strict=True)
    ]
    by_text = [disagreement_risk(answers, normalize) for answers in sampled]
    by_key = [disagreement_risk(answers, task.answer_key) for answers in sampled]
    assert by_text == [0.75, 0.75, 0.75]
    assert by_key == [0.0, 0.25, 0.75]


@pytest.fixture(scope="module")
def free_form_data() -> tuple[ProbeData, Probe]:
    """Toy data whose test items have four free-form samples each: one right when the
    greedy answer is wrong, three or four right otherwise."""
    engine = FakeEngine(num_layers=3, hidden=8, signal_layer=2)
    data = collect(engine, toy_task(200), batch_size=64)
    consistency = {}
    for row in grouped_split(data.groups, seed=0).test:
        item_id = data.item_ids[row]  # toy-0042 asks for A42
        right = 1 if data.labels[row].wrong else 3 + row % 2
        consistency[item_id] = free_form(str(int(item_id.split("-")[1])), right)
    return replace(data, consistency=consistency), sweep(data).probe


def test_the_probe_baseline_compares_the_tasks_answers(
    free_form_data: tuple[ProbeData, Probe],
) -> None:
    data, probe = free_form_data
    by_text = evaluate(probe, data, n_boot=20)
    assert np.ptp(by_text.scores["self_consistency"]) == 0.0
    assert by_text.methods["self_consistency"].auroc == pytest.approx(0.5)
    by_key = evaluate(probe, data, task=toy_task(200), n_boot=20)
    assert np.ptp(by_key.scores["self_consistency"]) > 0.0
    assert by_key.methods["self_consistency"].auroc > 0.9
    with pytest.raises(ValueError, match="not in task"):
        evaluate(probe, data, task=toy_task(10), n_boot=20)


def stop(text: str) -> Sample:
    return Sample(text, [], [], [], "stop")


def test_refine_votes_numeric_answers_as_before() -> None:
    def old_key(text: str) -> str:  # the numeric vote key before tasks had answer keys
        value = final_number(text)
        return "" if value is None else f"{value:g}"

    votes = [
        ["7", "8", "it is 8"],
        ["no idea", "12 + 5 = 17", "17.0", "unsure"],
        ["1,204", "1204", "= 3", "3", "3."],
    ]
    for texts in votes:
        samples = [stop(text) for text in texts]
        assert majority(samples, number_key) is majority(samples, old_key)


def test_refine_votes_free_form_answers_by_the_references_they_name() -> None:
    task = get_task("capitals")
    samples = [stop(t) for t in ("Cusco.", "Cusco.", "Lima.", "It is Lima", "Lima, Peru's")]
    assert majority(samples).text == "Cusco."  # by text: Cusco 2, every Lima differs
    assert majority(samples, task.answer_key).text == "Lima."


def test_task_verifier_policy_key_names_the_verifiers() -> None:
    assert resolve_policy().task_verifier is None
    assert resolve_policy(overrides=["task_verifier=numeric"]).task_verifier == "numeric"
    with pytest.raises(PolicyError) as caught:
        resolve_policy(overrides=["task_verifier=number"])
    assert "task_verifier" in str(caught.value)
    assert "choose one of exact, alias, numeric, yes_no, pope" in str(caught.value)


def test_tasks_show_prints_the_verifier_in_use(tmp_path: Path) -> None:
    path = tmp_path / "sums.jsonl"
    path.write_text(json.dumps({"question": "What is 45 - 13?", "answer": "32"}) + "\n")
    runner, app = CliRunner(), make_app()
    shown = runner.invoke(app, ["tasks", "show", "jsonl", "--path", str(path)])
    assert shown.exit_code == 0 and "verifier numeric" in shown.output
    args = ["tasks", "show", "jsonl", "--path", str(path), "--verifier", "alias"]
    chosen = runner.invoke(app, args)
    assert chosen.exit_code == 0 and "verifier alias" in chosen.output
    bad = runner.invoke(app, ["tasks", "show", "capitals", "--verifier", "number"])
    assert bad.exit_code == 2 and "choose one of exact, alias" in bad.output
