"""The graph's nodes: short functions `(state, runtime) -> update | Command`. The work
lives in `agents/`, the decisions between nodes in `graph.transitions`; here is only the
wiring: read the state, call the stage, emit events, return the update."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agents import acquire as acquiring
from agents import selection
from agents.cluster import ClusterPolicy
from agents.distributed import train_version_on_ray
from agents.evaluate import measure
from agents.optimize import StepFn, TrainResult, TrainSettings, train_version
from agents.planner import Planner
from agents.probe import (
    FittedProbe,
    fit_session_probe,
    loop_features,
    pass_rate_rows,
    refit_from_samples,
    risk_scorer,
)
from agents.records import CycleMetrics
from engines.base import Engine, RiskFn
from graph import cycle_data, reporting
from graph.events import Emitter, Failure, ProbeSaved, Progress, SessionEnd
from graph.policy import SessionPolicy
from graph.state import SessionState
from graph.transitions import (
    MONITOR_ROUTES,
    MonitorRoute,
    ProbeRoute,
    acquisition_record,
    after_probe,
    after_select,
    candidate_metrics,
    history_of,
    loop_probe_update,
    metrics_record,
    monitor_inputs,
    next_version_name,
    plan_record,
    probe_fits,
    probe_update,
    promotion,
    refit_message,
    retrain_counters,
    selection_message,
    session_thresholds,
    trained_message,
    trained_update,
    training_message,
)
from graph.versions import ModelVersions, version_record
from storage import ArtifactStore
from storage.layout import SessionLayout
from tasks.base import Task

Ctx = Runtime[SessionPolicy]


class Nodes:
    """Node functions bound to one session's model versions, artifacts, task and planner."""

    def __init__(
        self,
        versions: ModelVersions,
        artifacts: ArtifactStore,
        task: Task,
        planner: Planner,
        fallback: Callable[[str], str] | None = None,  # risk_adaptive's fallback chat model
    ) -> None:
        self.versions = versions
        self.artifacts = artifacts
        self.task = task
        self.planner = planner
        self.fallback = fallback

    def fit_probe_on_answers(self, state: SessionState, runtime: Ctx) -> Command[ProbeRoute]:
        """Fit the hallucination-risk probe on the current model's greedy train-split
        answers, its layer chosen by a sweep (at the start, and on a `refit_probe` decision)."""
        policy, fits = runtime.context, probe_fits(state)
        emit = _emitter(runtime, "fit_probe_on_answers", state.get("cycle", 0))
        engine, name = self.versions.engine(state), SessionLayout.session_probe_name(fits)
        fitted = fit_session_probe(
            engine,
            self.task,
            self.task.split("train", seed=policy.seed)[: policy.probe.items],
            name=name,
            folder=self.artifacts.root / name,
            max_new_tokens=policy.probe_max_new_tokens,
            target_precision=policy.refine.target_precision,
            seed=policy.seed,
            on_progress=emit.progress("probe answers"),
        )
        self._record_probe(fitted, emit)
        emit.end(
            f"probe: {fitted.description}",
            val_auroc=fitted.val_auroc,
            held_out_auroc=fitted.held_out_auroc,
        )
        update = probe_update(fitted, engine.fingerprint, fits)
        return Command(goto=after_probe(state), update=update)

    def baseline(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The initial model on dev: cycle 0 of the history."""
        emit = _emitter(runtime, "baseline", 0)
        engine = self.versions.engine(state, "v0")
        metrics = self._dev_metrics(state, runtime.context, engine, emit, cycle=0, version="v0")
        emit(f"v0 (initial): dev accuracy {metrics.accuracy:.1%}", metrics)
        emit.end()
        record = version_record("v0", None, None, engine.fingerprint)
        record["dev_accuracy"] = metrics.accuracy
        return {"history": [metrics], "versions": {"v0": record}}

    def acquire(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """Train prompts (probe-guided from a scored pool, or a uniform draw) and
        self-instruct ones, K samples each, risk per prompt; the prefill features saved."""
        policy, cycle, started = runtime.context, state.get("cycle", 0) + 1, time.time()
        emit = _emitter(runtime, "acquire", cycle, f"cycle {cycle} from {state['current_version']}")
        engine, risk_fn = self.versions.engine(state), self._risk_fn(state)
        choice = self.planner.acquire(policy, cycle=cycle, history=history_of(state))
        prompts = self._cycle_prompts(engine, risk_fn, choice.final, policy, cycle)
        attempts, seconds = self._sample(engine, risk_fn, prompts, policy, cycle, emit)
        message, summary = acquiring.summary(attempts, policy.acquire.samples_per_prompt)
        emit.end(message, **summary)
        return {
            "cycle": cycle,
            "cycle_started_at": started,
            "attempts": cycle_data.save_attempts(self.artifacts, cycle, attempts),
            "candidate_version": None,
            "acquisition": acquisition_record(
                prompts.scored, len(attempts), summary["tokens"], prompts.scoring_seconds, seconds
            ),
            "plans": [plan_record(choice, cycle, emit)],
        }

    def select(
        self, state: SessionState, runtime: Ctx
    ) -> Command[Literal["refit_probe_on_samples", "optimize", "monitor"]]:
        """Verifier (or self-judge) labels -> an SFT set and preference pairs."""
        policy, cycle = runtime.context, state["cycle"]
        emit = _emitter(runtime, "select", cycle)
        attempts = cycle_data.load_attempts(self.artifacts, state["attempts"] or "")
        choice = self.planner.select(
            policy, cycle=cycle, history=history_of(state), has_verifier=True
        )
        judge = lambda: self.versions.engine(state)  # noqa: E731 (loaded only for self_judge)
        selected = selection.select_data(
            self.task, attempts, choice.final, policy.select, judge=judge
        )
        data = cycle_data.save_selected(self.artifacts, cycle, selected)
        emit.note(selection_message(data, choice.final["strategy"]), **data)
        route, notes = after_select(data, policy)
        for note in notes:
            emit.note(note)
        emit.end()
        update = {"data": data, "plans": [plan_record(choice, cycle, emit)]}
        refit = policy.probe.refit_every_cycle
        return Command(goto="refit_probe_on_samples" if refit else route, update=update)

    def refit_probe_on_samples(
        self, state: SessionState, runtime: Ctx
    ) -> Command[Literal["optimize", "monitor"]]:
        """Refit the probe on the current version's own samples: each acquired prompt
        labelled by the share of its K samples that were wrong, its features the prefill
        its generation captured (every cycle that sampled this version contributes)."""
        policy, cycle = runtime.context, state["cycle"]
        emit = _emitter(runtime, "refit_probe_on_samples", cycle)
        fingerprint = self.versions.engine(state).fingerprint
        fitted = self._refit_on_samples(policy, cycle, fingerprint)
        self._record_probe(fitted, emit)
        emit.end(refit_message(fitted), val_auroc=fitted.val_auroc, held_out=fitted.held_out_auroc)
        route, _ = after_select(state.get("data") or {"sft": 0, "pairs": 0}, policy)
        return Command(goto=route, update=loop_probe_update(fitted, fingerprint, state))

    def _refit_on_samples(self, policy: SessionPolicy, cycle: int, fingerprint: str) -> FittedProbe:
        """The pass-rate probe on every cycle's samples of the version `fingerprint`."""
        parts = cycle_data.version_samples(self.artifacts, fingerprint, range(1, cycle + 1))
        rows = pass_rate_rows(
            self.task,
            parts,
            samples_per_prompt=policy.acquire.samples_per_prompt,
            max_new_tokens=policy.acquire.max_new_tokens,
        )
        name = SessionLayout.loop_probe_name(cycle)
        return refit_from_samples(
            rows,
            name=name,
            folder=self.artifacts.root / name,
            seed=policy.seed,
            target_precision=policy.refine.target_precision,
        )

    def optimize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """LoRA SFT or DPO from the current version -> a new candidate version."""
        policy, cycle, data = runtime.context, state["cycle"], state.get("data") or {}
        emit = _emitter(runtime, "optimize", cycle)
        history, previous = history_of(state), state.get("retrain_settings")
        choice = self.planner.optimize(
            policy, cycle=cycle, history=history, examples=data.get("sft", 0), previous=previous
        )
        settings = TrainSettings(**choice.final, seed=policy.seed + cycle)
        sft, pairs = cycle_data.load_data(self.artifacts, data)
        name, parent = next_version_name(state), state["current_version"]
        emit.note(training_message(name, parent, settings))
        result = self._train(state, name, sft, pairs, settings, emit, policy.cluster)
        engine = self.versions.register(name, SessionLayout.merged_of(result.version_dir))
        emit.end(trained_message(name, result), **result.summary())
        update = trained_update(name, parent, result, engine.fingerprint, settings)
        return update | {"plans": [plan_record(choice, cycle, emit)]}

    def evaluate(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The candidate on dev; its fresh labels also measure the (older) probe on it."""
        policy, cycle = runtime.context, state["cycle"]
        emit = _emitter(runtime, "evaluate", cycle)
        version = state.get("candidate_version") or state["current_version"]
        engine = self.versions.engine(state, version)
        metrics = self._dev_metrics(state, policy, engine, emit, cycle=cycle, version=version)
        metrics = candidate_metrics(metrics, state, time.time())
        emit(f"{version}: dev accuracy {metrics.accuracy:.1%}", metrics)
        emit.end()
        return {"history": [metrics]}

    def monitor(self, state: SessionState, runtime: Ctx) -> Command[MonitorRoute]:
        """Decide loop | retrain | refit_probe | rollback | stop, and promote or not."""
        policy, cycle, history = runtime.context, state.get("cycle", 0), history_of(state)
        emit = _emitter(runtime, "monitor", cycle)
        n_test = len(reporting.test_items(self.task, policy))
        inputs = monitor_inputs(state, history, n_test=n_test, now=time.time())
        decision, choice = self.planner.decide(policy, history, inputs)
        emit(f"{decision.action}: {decision.reason}", decision)
        update = promotion(state, decision, history, policy.monitor) | {
            "decisions": [decision],
            "plans": [plan_record(choice, cycle, emit)],
        }
        update |= retrain_counters(state, decision)
        emit.end()
        return Command(goto=MONITOR_ROUTES[decision.action], update=update)

    def finalize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The test split, scored once, for the initial and the final (best) model."""
        policy = runtime.context
        emit = _emitter(runtime, "finalize", state.get("cycle", 0))
        engine_of = lambda version: self.versions.engine(state, version)  # noqa: E731
        final = reporting.final_report(
            engine_of, self._risk_fn(state), state, self.task, policy, emit
        )
        self.artifacts.write_json(SessionLayout.REPORT_JSON, final)
        emit(f"finished: {final['stop_reason']}", SessionEnd(**final))
        emit.end()
        return {"final": final, "status": "finished"}

    # -- helpers (not nodes) ----------------------------------------------------------------

    def _risk_fn(self, state: SessionState) -> RiskFn | None:
        """The session's probe as a risk function (None: no probe yet)."""
        name = state.get("probe")
        return risk_scorer(self.artifacts.root / name) if name else None

    def _cycle_prompts(
        self,
        engine: Engine,
        risk_fn: RiskFn | None,
        plan: dict[str, Any],
        policy: SessionPolicy,
        cycle: int,
    ) -> acquiring.CyclePrompts:
        """The cycle's prompts per the acquire plan, guided by the probe `risk_fn`."""
        return acquiring.cycle_prompts(
            engine,
            self.task,
            plan,
            candidate_factor=policy.acquire.candidate_factor,
            cycle=cycle,
            seed=policy.seed,
            risk_fn=risk_fn,
        )

    def _sample(
        self,
        engine: Engine,
        risk_fn: RiskFn | None,
        prompts: acquiring.CyclePrompts,
        policy: SessionPolicy,
        cycle: int,
        emit: Emitter,
    ) -> tuple[list[acquiring.Attempt], float]:
        """The prompts' notes traced, K samples of each prompt, their prefill features
        saved; and the seconds the sampling took."""
        for note in prompts.notes:
            emit.note(note)
        started = time.time()
        attempts = acquiring.sample_cycle(
            engine,
            prompts,
            policy.acquire,
            seed=policy.seed,
            cycle=cycle,
            on_progress=emit.progress("sampling"),
            risk_fn=risk_fn,
        )
        seconds = time.time() - started
        cycle_data.save_features(self.artifacts, cycle, loop_features(engine, attempts))
        return attempts, seconds

    def _record_probe(self, fitted: FittedProbe, emit: Emitter) -> None:
        if fitted.name is None:
            emit(f"no probe fitted: {fitted.error}", Failure())
            return
        self.artifacts.add_dir(fitted.name, self.artifacts.root / fitted.name, kind="probe")
        emit(
            f"probe saved: {fitted.name}",
            ProbeSaved(name=fitted.name, feature=fitted.feature, val_auroc=fitted.val_auroc),
        )

    def _train(
        self,
        state: SessionState,
        name: str,
        sft: list[selection.SFTExample],
        pairs: list[selection.PreferencePair],
        settings: TrainSettings,
        emit: Emitter,
        cluster: ClusterPolicy,
    ) -> TrainResult:
        """A new version from the current one: in this process, or (backend 'ray') in
        Ray Train once the generation actors have handed back their CPUs/GPUs."""
        on_step: StepFn = lambda step, total, loss: emit(  # noqa: E731
            "training", Progress(done=step, total=total, loss=loss)
        )
        version_dir = self.versions.version_dir(name)
        if cluster.backend == "ray":
            self.versions.release()
            result = train_version_on_ray(
                self.versions.source(state),
                sft=sft,
                pairs=pairs,
                settings=settings,
                version_dir=version_dir,
                cluster=cluster,
                on_step=on_step,
            )
        else:
            model, tokenizer = self.versions.trainable_copy(state)
            result = train_version(
                model,
                tokenizer,
                sft=sft,
                pairs=pairs,
                settings=settings,
                version_dir=version_dir,
                on_step=on_step,
            )
        self.artifacts.add_dir(SessionLayout.version_name(name), result.version_dir, kind="model")
        return result

    def _dev_metrics(
        self,
        state: SessionState,
        policy: SessionPolicy,
        engine: Engine,
        emit: Emitter,
        *,
        cycle: int,
        version: str,
    ) -> CycleMetrics:
        """`version` on the dev split, timed (the monitor scales that time to the test
        split it holds back from the wall budget)."""
        started, stale = time.time(), state.get("stale_probe")
        measured = measure(
            engine,
            self.task,
            self.task.split("dev", seed=policy.seed)[: policy.evaluate.dev_limit],
            max_new_tokens=policy.evaluate.max_new_tokens,
            strategy=policy.evaluate.refine,
            refine=policy.refine,
            thresholds=session_thresholds(policy.refine, state),
            fallback=self.fallback,
            seed=policy.seed,
            stale=risk_scorer(self.artifacts.root / stale) if stale else None,
            on_progress=emit.progress("evaluating"),
            risk_fn=self._risk_fn(state),
        )
        cycle_data.save_dev_answers(self.artifacts, cycle, version, measured.results)
        metrics = metrics_record(
            measured, cycle=cycle, version=version, refine=policy.evaluate.refine
        )
        return metrics.model_copy(update={"eval_seconds": time.time() - started})


def _emitter(runtime: Ctx, node: str, cycle: int, message: str = "") -> Emitter:
    emit = Emitter(runtime.stream_writer, node, cycle)
    emit.start(message)
    return emit
