"""The graph's nodes: short functions `(state, runtime) -> update | Command`. The work
lives in `agents/`; the decisions in pure functions there; here is only the wiring."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any, Literal

from agents.measure import measure_dev
from agents.records import CycleMetrics, Decision
from langgraph.runtime import Runtime
from langgraph.types import Command

from agents import acquire as acquiring
from agents import selection
from agents.optimize import TrainSettings, train_version
from graph.events import Emitter
from graph.policy import SessionPolicy
from graph.state import SessionState
from graph.workbench import Workbench, version_record
from tasks.base import Task

Ctx = Runtime[SessionPolicy]


class Nodes:
    """Node functions bound to one session's workbench and task."""

    def __init__(self, bench: Workbench, task: Task) -> None:
        self.bench = bench
        self.task = task

    def _emitter(self, runtime: Ctx, node: str, state: SessionState) -> Emitter:
        emit = Emitter(runtime.stream_writer, node, state.get("cycle", 0))
        emit.start()
        return emit

    # probe: fit the hallucination-risk probe on the current model (train split only)
    def probe(self, state: SessionState, runtime: Ctx) -> Command[Literal["baseline", "acquire"]]:
        policy, emit = runtime.context, self._emitter(runtime, "probe", state)
        engine = self.bench.engine(state)
        items = self.task.split("train", seed=policy.seed)[: policy.probe.items]
        fitted = self.bench.fit_probe(engine, self.task, items, policy, emit)
        emit.end(f"probe fitted: {fitted.description}", val_auroc=fitted.val_auroc)
        update = {
            "probe": fitted.name,
            "probe_fingerprint": engine.fingerprint,
            "probe_val_auroc": fitted.val_auroc,
        }
        return Command(goto="acquire" if state.get("history") else "baseline", update=update)

    # baseline: the initial model on dev (cycle 0 of the history)
    def baseline(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        policy, emit = runtime.context, self._emitter(runtime, "baseline", state)
        engine = self.bench.engine(state, "v0")
        self.bench.attach_probe(engine, state.get("probe"))
        metrics = measure_dev(engine, self.task, policy, emit, cycle=0, version="v0")
        emit(
            "metric", f"initial model: dev accuracy {metrics.accuracy:.1%}", **metrics.model_dump()
        )
        emit.end()
        record = version_record("v0", None, None, engine.fingerprint)
        record["dev_accuracy"] = metrics.accuracy
        return {"history": [metrics.model_dump()], "versions": {"v0": record}, "cycle": 0}

    # acquire: fresh prompts from train (+ self-instruct), K samples each, risk per prompt
    def acquire(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        policy, cycle = runtime.context, state.get("cycle", 0) + 1
        emit = Emitter(runtime.stream_writer, "acquire", cycle)
        emit.start(f"cycle {cycle}: acquiring data with {state['current_version']}")
        engine = self.bench.engine(state)
        self.bench.attach_probe(engine, state.get("probe"))
        plan = self.bench.plan_acquire(state, policy, emit)
        train = self.task.split("train", seed=policy.seed)
        items = acquiring.choose_prompts(train, plan["prompts"], cycle=cycle, seed=policy.seed)
        held_out = frozenset(
            i.group for s in ("dev", "test") for i in self.task.split(s, seed=policy.seed)
        )
        synthetic = acquiring.synthesize_items(
            engine,
            self.task,
            train,
            plan["synthesize"],
            blocked_groups=held_out,
            seed=policy.seed + cycle,
        )
        if plan["synthesize"]:
            emit(
                "action",
                f"self-instruct: {len(synthetic)} of {plan['synthesize']} new prompts kept",
            )
        attempts = acquiring.sample_attempts(
            engine,
            items + synthetic,
            n=policy.acquire.samples_per_prompt,
            temperature=policy.acquire.temperature,
            top_p=policy.acquire.top_p,
            max_new_tokens=policy.acquire.max_new_tokens,
            seed=policy.seed + 1000 * cycle,
            synthesized=frozenset(i.id for i in synthetic),
            on_progress=emit.progress("sampling"),
        )
        name = self.bench.save_attempts(cycle, attempts)
        risks = [a.risk for a in attempts if a.risk is not None]
        emit.end(
            f"{len(attempts)} prompts x {policy.acquire.samples_per_prompt} samples",
            prompts=len(attempts),
            mean_risk=sum(risks) / len(risks) if risks else None,
        )
        return {"cycle": cycle, "attempts": name, "plans": [plan], "candidate_version": None}

    # select: verifier (or self-judge) labels -> SFT set and preference pairs
    def select(self, state: SessionState, runtime: Ctx) -> Command[Literal["optimize", "monitor"]]:
        policy, emit = runtime.context, self._emitter(runtime, "select", state)
        engine = self.bench.engine(state)
        attempts = self.bench.load_attempts(state["attempts"] or "", self.task)
        plan = self.bench.plan_select(state, policy, emit)
        if plan["strategy"] == "self_judge":
            labelled = selection.label_with_self_judge(engine, attempts)
        else:
            labelled = selection.label_with_verifier(self.task, attempts)
        examples = selection.dedupe(
            selection.STRATEGIES[plan["strategy"]](labelled, plan["max_per_prompt"])
        )
        pairs = selection.preference_pairs(labelled)
        solved = sum(any(lab.correct) for lab in labelled)
        data = self.bench.save_data(state["cycle"], examples, pairs)
        data.update(
            prompts=len(labelled), solved=solved, sample_accuracy=_sample_accuracy(labelled)
        )
        emit(
            "action",
            f"selected {len(examples)} examples and {len(pairs)} pairs ({plan['strategy']})",
            **data,
        )
        enough = data["sft"] >= policy.select.min_examples or (
            policy.optimize.method == "dpo" and data["pairs"] >= policy.select.min_examples
        )
        emit.end()
        goto: Literal["optimize", "monitor"] = "optimize" if enough else "monitor"
        if not enough:
            emit(
                "action",
                f"too little data to train (< {policy.select.min_examples} examples): skipping optimize",
            )
        return Command(goto=goto, update={"data": data, "plans": [plan]})

    # optimize: LoRA SFT / DPO from the current version -> a new candidate version
    def optimize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        policy, emit = runtime.context, self._emitter(runtime, "optimize", state)
        settings = TrainSettings(
            **{**self.bench.plan_optimize(state, policy, emit), "seed": policy.seed}
        )
        sft, pairs = self.bench.load_data(state["data"] or {})
        name = f"v{len(state.get('versions', {}))}"
        model, tokenizer = self.bench.trainable_copy(state)
        emit(
            "action",
            f"training {name} from {state['current_version']}: {settings.method}, "
            f"lr {settings.learning_rate:g}, {len(sft) if settings.method == 'sft' else len(pairs)} examples",
        )
        result = train_version(
            model,
            tokenizer,
            sft=sft,
            pairs=pairs,
            settings=settings,
            version_dir=self.bench.version_dir(name),
            on_step=lambda step, total, loss: emit(
                "progress", "training", done=step, total=total, loss=loss
            ),
        )
        engine = self.bench.engine(
            {
                **state,
                "versions": {
                    name: version_record(
                        name, result.version_dir / "merged", state["current_version"], ""
                    )
                },
            },
            name,
        )  # type: ignore[typeddict-item]
        record = version_record(
            name, result.version_dir / "merged", state["current_version"], engine.fingerprint
        )
        self.bench.artifacts.add_dir(f"versions/{name}", result.version_dir, kind="model")
        emit.end(
            f"{name}: {result.steps} steps, final loss {result.final_loss}",
            **asdict(result) | {"version_dir": str(result.version_dir)},
        )
        return {
            "candidate_version": name,
            "versions": {name: record},
            "train": asdict(replace(settings)),
        }

    # evaluate: the candidate on dev; fresh labels also measure the probe on the new model
    def evaluate(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        policy, emit = runtime.context, self._emitter(runtime, "evaluate", state)
        version = state.get("candidate_version") or state["current_version"]
        engine = self.bench.engine(state, version)
        self.bench.attach_probe(engine, state.get("probe"))
        metrics = measure_dev(
            engine, self.task, policy, emit, cycle=state["cycle"], version=version
        )
        metrics = metrics.model_copy(
            update={"train_examples": (state.get("data") or {}).get("sft", 0)}
        )
        emit("metric", f"{version}: dev accuracy {metrics.accuracy:.1%}", **metrics.model_dump())
        emit.end()
        return {"history": [metrics.model_dump()]}

    # monitor: decide loop | retrain | refit_probe | rollback | stop; promote or not
    def monitor(
        self, state: SessionState, runtime: Ctx
    ) -> Command[Literal["acquire", "optimize", "probe", "finalize"]]:
        policy, emit = runtime.context, self._emitter(runtime, "monitor", state)
        history = [CycleMetrics.model_validate(h) for h in state.get("history", [])]
        decision = self.bench.plan_decision(state, policy, history, emit)
        update = promotion(state, decision, history)
        emit("decision", f"{decision.action}: {decision.reason}", **decision.model_dump())
        emit.end()
        update["decisions"] = [{"cycle": state.get("cycle", 0), **decision.model_dump()}]
        if decision.action == "retrain":
            update["retrains"] = state.get("retrains", 0) + 1
            update["train"] = self.bench.adjusted_for_retrain(state, policy)
        goto = {
            "loop": "acquire",
            "rollback": "acquire",
            "retrain": "optimize",
            "refit_probe": "probe",
            "stop": "finalize",
        }
        return Command(goto=goto[decision.action], update=update)  # type: ignore[arg-type]

    # finalize: the test split, scored once, for the initial and the final model
    def finalize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        policy, emit = runtime.context, self._emitter(runtime, "finalize", state)
        final = self.bench.final_report(state, self.task, policy, emit)
        emit("session", f"finished: {final['stop_reason']}", **final)
        emit.end()
        return {"final": final, "status": "finished"}


def promotion(
    state: SessionState, decision: Decision, history: list[CycleMetrics]
) -> dict[str, Any]:
    """Promote the evaluated candidate unless the decision rolls it back (regression guard);
    keep the best version by dev accuracy."""
    candidate = state.get("candidate_version")
    if not candidate or decision.action == "rollback":
        return {"current_version": state["best_version"], "candidate_version": None}
    by_version = {h.version: h.accuracy for h in history}
    best = state["best_version"]
    better = by_version.get(candidate, -1.0) > by_version.get(best, -1.0)
    return {
        "current_version": candidate,
        "best_version": candidate if better else best,
        "candidate_version": None,
    }


def _sample_accuracy(labelled: list[selection.Labelled]) -> float:
    total = sum(len(lab.correct) for lab in labelled)
    return sum(sum(lab.correct) for lab in labelled) / max(total, 1)


def elapsed_minutes(state: SessionState) -> float:
    return (time.time() - state.get("started_at", time.time())) / 60
