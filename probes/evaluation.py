"""A saved probe against the post-generation baselines on its own test split.

    probe = load_probe(path, expected_fingerprint=engine.fingerprint)
    data = collect(engine, task, held_out_items(task, probe))
    data = sample_consistency(engine, data, k=5)      # the self-consistency baseline
    report = evaluate(probe, data)

The test split is scored here only, after the sweep has chosen and saved a probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engines.base import Engine
from probes.artifact import Probe, check_fingerprint, check_template
from probes.baselines import disagreement_risk
from probes.data import ProbeData
from probes.features import prompt_template_hash
from probes.labels import LabelSummary, label_array, summarize_labels, usable
from probes.metrics import RiskMetrics, risk_metrics
from probes.runtime import RiskScorer
from probes.split import grouped_split
from tasks.base import Item, Task, split_of
from tasks.verifiers import normalize as normalize_answer


def held_out_items(task: Task, probe: Probe) -> list[Item]:
    """The task's items in the probe's test split (same seeded grouped hash)."""
    info = probe.card.split
    return [
        item for item in task.items if split_of(item.group, info.seed, info.fractions) == "test"
    ]


@dataclass
class EvalReport:
    feature: str
    n_test: int
    labels: LabelSummary  # of the test items
    methods: dict[str, RiskMetrics]  # "probe" and each baseline
    cost_s_per_item: dict[str, float]  # what each method costs per item
    y: NDArray[np.int64]  # (T,) test labels
    scores: dict[str, NDArray[np.float64]]  # method -> (T,) risk

    def table(self) -> list[dict[str, object]]:
        return [
            {"method": name, **metrics.to_json(), "cost_s_per_item": self.cost_s_per_item.get(name)}
            for name, metrics in self.methods.items()
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "n_test": self.n_test,
            "labels": vars(self.labels),
            "methods": self.table(),
            "cost_s_per_item": self.cost_s_per_item,
        }


def evaluate(
    probe: Probe,
    data: ProbeData,
    *,
    task: Task | None = None,
    include_truncated: bool = False,
    normalize: Callable[[str], Hashable] = normalize_answer,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Test-split metrics of the probe and of the baselines on the same items, with their
    cost per item. Rows of `data` outside the probe's test split are ignored; the
    self-consistency baseline is included when every test item has sampled answers, which
    it compares by the task's `answer_key` (the final number, the references named, ...),
    else (no `task`) by their `normalize`d text."""
    check_fingerprint(probe.card, data.features.fingerprint, where="probe")
    check_template(probe.card, data.features.template_hash, where="probe")
    info = probe.card.split
    split = grouped_split(data.groups, seed=info.seed, fractions=info.fractions)
    rows = split.test[usable(data.labels, include_truncated=include_truncated)[split.test]]
    if len(rows) == 0:
        raise ValueError("no labelled items of the probe's test split in this data")
    y = label_array(data.labels)[rows]  # (T,)
    scorer = RiskScorer(probe)
    matrix = data.features.matrix(probe.spec)[rows]  # (T, D)
    started = time.perf_counter()
    for row in matrix:
        scorer.score(row)
    score_seconds = (time.perf_counter() - started) / len(rows)
    scores = {
        "probe": scorer.score(matrix),
        "mean_logprob": -data.mean_logprob[rows],
        "mean_entropy": data.mean_entropy[rows],
    }
    costs = {
        "probe": data.timing.get("prefill_only", float("nan")) + score_seconds,
        "probe_in_generation": score_seconds,
        "mean_logprob": data.timing.get("greedy_generation", float("nan")),
        "mean_entropy": data.timing.get("greedy_generation", float("nan")),
    }
    sampled = [data.consistency.get(data.item_ids[row], []) for row in rows]
    if all(sampled):
        key = vote_key(task, [data.item_ids[row] for row in rows], normalize)
        scores["self_consistency"] = np.array(
            [disagreement_risk(answers, key) for answers in sampled]
        )
        costs["self_consistency"] = data.timing.get("self_consistency", float("nan"))
    methods = {
        name: risk_metrics(
            y, risk, prob=risk if name == "probe" else None, n_boot=n_boot, seed=seed
        )
        for name, risk in scores.items()
    }
    test_labels = [data.labels[row] for row in split.test]
    return EvalReport(
        feature=probe.spec.name,
        n_test=len(rows),
        labels=summarize_labels(test_labels, include_truncated=include_truncated),
        methods=methods,
        cost_s_per_item=costs,
        y=y,
        scores=scores,
    )


def vote_key(
    task: Task | None, item_ids: Sequence[str], normalize: Callable[[str], Hashable]
) -> Callable[[str], Hashable]:
    """How the items' sampled answers are compared: by the task's `answer_key` (the items
    must be the task's), else (no task) by `normalize`."""
    if task is None:
        return normalize
    known = {item.id for item in task.items}
    missing = [item_id for item_id in item_ids if item_id not in known]
    if missing:
        raise ValueError(
            f"item {missing[0]!r} is not in task {task.name!r}: pass the task the data was "
            "collected on"
        )
    return task.answer_key


def score_prompts(engine: Engine, probe: Probe, prompts: Sequence[str]) -> list[float]:
    """Risk of each prompt from one prefill (for `autodidact probe score`)."""
    check_fingerprint(probe.card, engine.fingerprint, where="probe")
    check_template(probe.card, prompt_template_hash(engine), where="probe")
    scorer = RiskScorer(probe)
    return [scorer(states) for states in engine.hidden_states(prompts)]
