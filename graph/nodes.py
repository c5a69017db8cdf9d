"""The graph's nodes: short functions `(state, runtime) -> update | Command`. The work
lives in `agents/`, the decisions in pure functions there; here is only the wiring."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agents import acquire as acquiring
from agents import selection
from agents.evaluate import Measurement, RefineSettings, measure
from agents.monitor import finalize_minutes
from agents.optimize import TrainSettings, train_version
from agents.planner import Planner
from agents.records import CycleMetrics, Decision, PlannedChoice
from graph import probing, reporting
from graph.events import Emitter
from graph.policy import SessionPolicy
from graph.state import SessionState
from graph.workbench import Workbench, version_record
from tasks.base import Task

Ctx = Runtime[SessionPolicy]
MONITOR_ROUTES = {
    "loop": "acquire",
    "rollback": "acquire",
    "retrain": "optimize",
    "refit_probe": "probe",
    "stop": "finalize",
}


class Nodes:
    """Node functions bound to one session's workbench, task and planner."""

    def __init__(self, bench: Workbench, task: Task, planner: Planner) -> None:
        self.bench = bench
        self.task = task
        self.planner = planner

    def _emitter(self, runtime: Ctx, node: str, cycle: int, message: str = "") -> Emitter:
        emit = Emitter(runtime.stream_writer, node, cycle)
        emit.start(message)
        return emit

    def probe(self, state: SessionState, runtime: Ctx) -> Command[Literal["baseline", "acquire"]]:
        """Fit the hallucination-risk probe on the current model's train-split answers."""
        policy = runtime.context
        emit = self._emitter(runtime, "probe", state.get("cycle", 0))
        engine = self.bench.engine(state)
        refits = state.get("probe_refits", 0) + (1 if state.get("history") else 0)
        fitted = probing.fit_session_probe(
            self.bench,
            engine,
            self.task,
            self.task.split("train", seed=policy.seed)[: policy.probe.items],
            max_new_tokens=policy.probe.max_new_tokens or policy.evaluate.max_new_tokens,
            target_precision=policy.refine.target_precision,
            seed=policy.seed,
            index=refits,
            emit=emit,
        )
        emit.end(
            f"probe: {fitted.description}",
            val_auroc=fitted.val_auroc,
            held_out_auroc=fitted.held_out_auroc,
        )
        update = {
            "probe": fitted.name,
            "probe_fingerprint": engine.fingerprint,
            "probe_val_auroc": fitted.val_auroc,
            "probe_val_ece": fitted.val_ece,
            "probe_fit_auroc": fitted.held_out_auroc,
            "probe_fit_ece": fitted.held_out_ece,
            "probe_refits": refits,
            "thresholds": {"low": fitted.thresholds.low, "high": fitted.thresholds.high},
        }
        return Command(goto="acquire" if state.get("history") else "baseline", update=update)

    def baseline(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The initial model on dev: cycle 0 of the history."""
        emit = self._emitter(runtime, "baseline", 0)
        engine = self.bench.engine(state, "v0")
        metrics = self._dev_metrics(state, runtime.context, engine, emit, cycle=0, version="v0")
        emit("metric", f"v0 (initial): dev accuracy {metrics.accuracy:.1%}", **metrics.model_dump())
        emit.end()
        record = version_record("v0", None, None, engine.fingerprint)
        record["dev_accuracy"] = metrics.accuracy
        return {"history": [metrics.model_dump()], "versions": {"v0": record}}

    def acquire(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """Fresh train prompts (and self-instruct ones), K samples each, risk per prompt."""
        policy, cycle, started = runtime.context, state.get("cycle", 0) + 1, time.time()
        emit = self._emitter(
            runtime, "acquire", cycle, f"cycle {cycle} from {state['current_version']}"
        )
        engine = self.bench.engine(state)
        probing.attach_probe(self.bench, engine, state.get("probe"))
        choice = self.planner.acquire(policy, cycle=cycle, history=history_of(state))
        plan = choice.final
        train = self.task.split("train", seed=policy.seed)
        pool = acquiring.choose_prompts(train, plan["prompts"] * 2, cycle=cycle, seed=policy.seed)
        items = acquiring.within_risk_band(
            engine, pool, plan["min_risk"], plan["max_risk"], plan["prompts"]
        )
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
            emit("action", f"self-instruct: kept {len(synthetic)} of {plan['synthesize']} asked")
        a = policy.acquire
        attempts = acquiring.sample_attempts(
            engine,
            items + synthetic,
            n=a.samples_per_prompt,
            temperature=a.temperature,
            top_p=a.top_p,
            max_new_tokens=a.max_new_tokens,
            seed=policy.seed + 1000 * cycle,
            synthesized=frozenset(i.id for i in synthetic),
            on_progress=emit.progress("sampling"),
        )
        risks = [x.risk for x in attempts if x.risk is not None]
        emit.end(
            f"{len(attempts)} prompts x {a.samples_per_prompt} samples",
            prompts=len(attempts),
            mean_risk=sum(risks) / len(risks) if risks else None,
        )
        return {
            "cycle": cycle,
            "cycle_started_at": started,
            "attempts": self.bench.save_attempts(cycle, attempts),
            "candidate_version": None,
            "plans": [plan_record(choice, cycle, emit)],
        }

    def select(self, state: SessionState, runtime: Ctx) -> Command[Literal["optimize", "monitor"]]:
        """Verifier (or self-judge) labels -> an SFT set and preference pairs."""
        policy, cycle = runtime.context, state["cycle"]
        emit = self._emitter(runtime, "select", cycle)
        attempts = self.bench.load_attempts(state["attempts"] or "")
        choice = self.planner.select(
            policy, cycle=cycle, history=history_of(state), has_verifier=True
        )
        strategy, per_prompt = choice.final["strategy"], choice.final["max_per_prompt"]
        if strategy == "self_judge":
            labelled = selection.label_with_self_judge(self.bench.engine(state), attempts)
        else:
            labelled = selection.label_with_verifier(self.task, attempts)
        examples = selection.STRATEGIES[strategy](labelled, per_prompt)
        examples = selection.dedupe(examples) if policy.select.dedupe else examples
        pairs = selection.preference_pairs(labelled) if policy.select.pairs else []
        data = self.bench.save_data(cycle, examples, pairs)
        data.update(prompts=len(labelled), sample_accuracy=selection.sample_accuracy(labelled))
        emit(
            "action", f"selected {data['sft']} examples, {data['pairs']} pairs ({strategy})", **data
        )
        usable = data["pairs"] if policy.optimize.method == "dpo" else data["sft"]
        enough = usable >= policy.select.min_examples
        if not enough:
            emit(
                "action",
                f"too little data ({usable} < select.min_examples): no training this cycle",
            )
        emit.end()
        update = {"data": data, "plans": [plan_record(choice, cycle, emit)]}
        return Command(goto="optimize" if enough else "monitor", update=update)

    def optimize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """LoRA SFT or DPO from the current version -> a new candidate version."""
        policy, cycle = runtime.context, state["cycle"]
        emit = self._emitter(runtime, "optimize", cycle)
        data = state.get("data") or {}
        retrain = state.get("retrain_settings")
        choice = self.planner.optimize(
            policy,
            cycle=cycle,
            history=history_of(state),
            examples=data.get("sft", 0),
            previous=retrain,
        )
        settings = TrainSettings(**choice.final, seed=policy.seed + cycle)
        sft, pairs = self.bench.load_data(data)
        name = f"v{len(state.get('versions', {}))}"
        parent = state["current_version"]
        emit(
            "action",
            f"training {name} from {parent}: {settings.method}, lr {settings.learning_rate:g}, "
            f"{settings.epochs:g} epochs",
        )
        model, tokenizer = self.bench.trainable_copy(state)
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
        self.bench.artifacts.add_dir(f"versions/{name}", result.version_dir, kind="model")
        engine = self.bench.register(name, result.version_dir / "merged")
        emit.end(
            f"{name}: {result.steps} steps, loss {result.final_loss}",
            steps=result.steps,
            final_loss=result.final_loss,
            train_seconds=result.seconds,
            examples=result.examples,
        )
        return {
            "candidate_version": name,
            "versions": {
                name: version_record(
                    name, result.version_dir / "merged", parent, engine.fingerprint
                )
            },
            "train": asdict(settings),
            "retrain_settings": None,
            "plans": [plan_record(choice, cycle, emit)],
        }

    def evaluate(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The candidate on dev; its fresh labels also measure the (older) probe on it."""
        policy, cycle = runtime.context, state["cycle"]
        emit = self._emitter(runtime, "evaluate", cycle)
        version = state.get("candidate_version") or state["current_version"]
        engine = self.bench.engine(state, version)
        metrics = self._dev_metrics(state, policy, engine, emit, cycle=cycle, version=version)
        metrics = metrics.model_copy(
            update={
                "train_examples": (state.get("data") or {}).get("sft", 0),
                "seconds": time.time() - state.get("cycle_started_at", time.time()),
            }
        )
        emit("metric", f"{version}: dev accuracy {metrics.accuracy:.1%}", **metrics.model_dump())
        emit.end()
        return {"history": [metrics.model_dump()]}

    def monitor(
        self, state: SessionState, runtime: Ctx
    ) -> Command[Literal["acquire", "optimize", "probe", "finalize"]]:
        """Decide loop | retrain | refit_probe | rollback | stop, and promote or not."""
        policy, cycle = runtime.context, state.get("cycle", 0)
        emit = self._emitter(runtime, "monitor", cycle)
        history = history_of(state)
        trained = bool(state.get("candidate_version"))
        decision, choice = self.planner.decide(
            policy,
            history,
            best_version=state["best_version"],
            elapsed_minutes=(time.time() - state["started_at"]) / 60,
            retrains_so_far=state.get("retrains", 0),
            probe_baseline_auroc=state.get("probe_fit_auroc"),
            probe_baseline_ece=state.get("probe_fit_ece"),
            probe_refits_so_far=state.get("probe_refits", 0),
            last_cycle_minutes=(time.time() - state.get("cycle_started_at", time.time())) / 60,
            finalize_minutes=finalize_minutes(
                history, len(reporting.test_items(self.task, policy))
            ),
            trained=trained,
            cycle=cycle,
        )
        emit("decision", f"{decision.action}: {decision.reason}", **decision.model_dump())
        update = promotion(state, decision, history) | {
            "decisions": [{"cycle": cycle, **decision.model_dump()}],
            "plans": [plan_record(choice, cycle, emit)],
        }
        if decision.action == "retrain":
            update["retrains"] = state.get("retrains", 0) + 1
            update["retrain_settings"] = state.get("train") or None
        emit.end()
        return Command(goto=MONITOR_ROUTES[decision.action], update=update)  # type: ignore[arg-type]

    def finalize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The test split, scored once, for the initial and the final (best) model."""
        policy = runtime.context
        emit = self._emitter(runtime, "finalize", state.get("cycle", 0))
        final = reporting.final_report(self.bench, state, self.task, policy, emit)
        self.bench.artifacts.write_json("report.json", final)
        emit("session", f"finished: {final['stop_reason']}", **final)
        emit.end()
        return {"final": final, "status": "finished"}

    def _dev_metrics(
        self,
        state: SessionState,
        policy: SessionPolicy,
        engine: Any,
        emit: Emitter,
        *,
        cycle: int,
        version: str,
    ) -> CycleMetrics:
        """`version` on the dev split, timed (the monitor scales that time to the test
        split it holds back from the wall budget)."""
        started = time.time()
        measured = self._measure(state, policy, engine, emit)
        metrics = cycle_metrics(
            measured, cycle=cycle, version=version, refine=policy.evaluate.refine
        )
        return metrics.model_copy(update={"eval_seconds": time.time() - started})

    def _measure(
        self, state: SessionState, policy: SessionPolicy, engine: Any, emit: Emitter
    ) -> Measurement:
        probing.attach_probe(self.bench, engine, state.get("probe"))
        items = self.task.split("dev", seed=policy.seed)[: policy.evaluate.dev_limit]
        return measure(
            engine,
            self.task,
            items,
            max_new_tokens=policy.evaluate.max_new_tokens,
            refine=refine_settings(policy, state),
            fallback=self.bench.fallback,
            seed=policy.seed,
            on_progress=emit.progress("evaluating"),
        )


def history_of(state: SessionState) -> list[CycleMetrics]:
    return [CycleMetrics.model_validate(h) for h in state.get("history", [])]


def cycle_metrics(measured: Measurement, *, cycle: int, version: str, refine: str) -> CycleMetrics:
    s = measured.summary
    return CycleMetrics(
        cycle=cycle,
        version=version,
        accuracy=s.accuracy,
        hallucination_rate=s.hallucination_rate,
        abstention_rate=s.abstention_rate,
        truncation_rate=s.truncated / max(s.n, 1),
        mean_risk=measured.mean_risk,
        probe_auroc=measured.probe_auroc,
        probe_ece=measured.probe_ece,
        n_dev=s.n,
        refine=refine,
    )


def refine_settings(policy: SessionPolicy, state: SessionState) -> RefineSettings:
    """The policy's thresholds, or those chosen on the probe's validation split."""
    chosen = state.get("thresholds") or {}
    r = policy.refine
    return RefineSettings(
        strategy=policy.evaluate.refine,
        k=r.k,
        temperature=r.temperature,
        low=r.low_threshold if r.low_threshold is not None else chosen.get("low", 0.3),
        high=r.high_threshold if r.high_threshold is not None else chosen.get("high", 0.7),
    )


def plan_record(choice: PlannedChoice, cycle: int, emit: Emitter) -> dict[str, Any]:
    """Record a planner's choice in the state and the event stream."""
    emit("action", f"{choice.stage} plan ({choice.source}): {choice.reason}", **choice.model_dump())
    return {"cycle": cycle, **choice.model_dump()}


def promotion(
    state: SessionState, decision: Decision, history: list[CycleMetrics]
) -> dict[str, Any]:
    """Promote the evaluated candidate when the decision allows it (never past the
    regression guard); otherwise the current version is the best one. Best = highest dev
    accuracy so far."""
    candidate, best = state.get("candidate_version"), state["best_version"]
    if not candidate or not decision.promote:
        return {"current_version": best, "candidate_version": None}
    accuracy = {h.version: h.accuracy for h in history}
    better = accuracy.get(candidate, -1.0) > accuracy.get(best, -1.0)
    return {
        "current_version": candidate,
        "best_version": candidate if better else best,
        "candidate_version": None,
    }
