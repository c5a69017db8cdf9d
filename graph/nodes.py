"""The graph's nodes: short functions `(state, runtime) -> update | Command`. The work
lives in `agents/`, the decisions between nodes in `graph.transitions`; here is only the
wiring: read the state, call the stage, emit events, return the update."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from agents import acquire as acquiring
from agents import grpo, selection
from agents.distributed import train_version_on_ray
from agents.evaluate import final_test_items, measure
from agents.optimize import StepFn, TrainResult, TrainSettings, method_at, train_version
from agents.planner import Planner
from agents.probe import (
    FittedProbe,
    fit_on_answers,
    fit_session_probe,
    loop_features,
    pass_rate_rows,
    refit_from_samples,
    risk_scorer,
)
from agents.records import CycleMetrics
from engines.base import Engine, RiskFn
from graph import closing_report, cycle_data
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
    best_model_record,
    candidate_metrics,
    floor_gate,
    floor_gate_source,
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
    rollback_recipe,
    selection_message,
    session_thresholds,
    trained_message,
    trained_update,
    training_message,
)
from graph.versions import ModelVersions, version_record
from probes.calibration import Thresholds
from storage import ArtifactStore
from storage.layout import SessionLayout
from tasks.base import Item, Task

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
        fitted = self._fit_on_train_answers(engine, name, policy, emit)
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
        prompts = self._cycle_prompts(engine, risk_fn, choice.final, policy, state)
        attempts, seconds = self._sample(engine, risk_fn, prompts, policy, cycle, emit)
        message, summary = acquiring.summary(attempts, policy.acquire.samples_per_prompt)
        emit.end(message, **summary)
        return {
            "cycle": cycle,
            "cycle_started_at": started,
            "attempts": cycle_data.save_attempts(self.artifacts, cycle, attempts),
            "candidate_version": None,
            "acquisition": acquisition_record(prompts, len(attempts), summary["tokens"], seconds),
            "drawn_by": [state["current_version"]],
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
        data |= self._grpo_groups(attempts, policy, cycle)
        emit.note(selection_message(data, choice.final["strategy"]), **data)
        route, notes = after_select(data, policy, cycle)
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
        route, _ = after_select(state.get("data") or {"sft": 0, "pairs": 0}, policy, cycle)
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
        """LoRA SFT, DPO or GRPO from the current version -> a new candidate version."""
        policy, cycle, data = runtime.context, state["cycle"], state.get("data") or {}
        emit = _emitter(runtime, "optimize", cycle)
        history, previous = history_of(state), state.get("retrain_settings")
        choice = self.planner.optimize(
            policy,
            cycle=cycle,
            history=history,
            examples=data.get("groups", data.get("sft", 0)),
            previous=previous,
            recipe=state.get("recipe"),
        )
        settings = TrainSettings(**choice.final, seed=policy.seed + cycle)
        name, parent = next_version_name(state), state["current_version"]
        emit.note(training_message(name, parent, settings))
        result = self._train(state, name, settings, emit, policy)
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
        n_test, refits = len(self._test_items(policy)), policy.probe.refit_every_cycle
        now = time.time()
        inputs = monitor_inputs(state, history, n_test=n_test, now=now, refit_each_cycle=refits)
        decision, choice = self.planner.decide(policy, history, inputs)
        decision, recipe = rollback_recipe(state, decision, policy.optimize)
        emit(f"{decision.action}: {decision.reason}", decision)
        update = recipe | promotion(state, decision, history, policy.monitor)
        update |= {"decisions": [decision], "plans": [plan_record(choice, cycle, emit)]}
        update |= retrain_counters(state, decision)
        emit.end()
        return Command(goto=MONITOR_ROUTES[decision.action], update=update)

    def finalize(self, state: SessionState, runtime: Ctx) -> dict[str, Any]:
        """The test split, scored once, for the initial and the final (best) model."""
        policy = runtime.context
        emit = _emitter(runtime, "finalize", state.get("cycle", 0))
        update = self._final_probe(state, policy, emit)
        state = {**state, **update}  # type: ignore[typeddict-item]
        update |= self._shipped_gate(state, policy, emit)
        state = {**state, **update}  # type: ignore[typeddict-item]
        engine_of = lambda version: self.versions.engine(state, version)  # noqa: E731
        test = self._test_items(policy)
        final = closing_report.final_report(
            engine_of, self._risk_fn(state), state, self.task, test, policy, emit
        )
        self.artifacts.write_json(SessionLayout.REPORT_JSON, final)
        self.artifacts.write_json(SessionLayout.MODEL_JSON, best_model_record(state, policy))
        emit(f"finished: {final['stop_reason']}", SessionEnd(**final))
        emit.end()
        return update | {"final": final, "status": "finished"}

    # -- helpers (not nodes) ----------------------------------------------------------------

    def _fit_final_probe(
        self, engine: Engine, best: str, cycle: int, policy: SessionPolicy, emit: Emitter
    ) -> FittedProbe:
        """`_final_probe`'s fit: on the train split's greedy answers under the
        accuracy_floor gate rule, else on cycle `cycle`'s dev answers of `best`."""
        name = SessionLayout.final_probe_name(best)
        if policy.refine.gate_rule == "accuracy_floor":
            return self._fit_on_train_answers(engine, name, policy, emit)
        return fit_on_answers(
            engine,
            self.task,
            cycle_data.load_dev_answers(self.artifacts, cycle, best),
            name=name,
            folder=self.artifacts.root / name,
            max_new_tokens=policy.evaluate.max_new_tokens,
            target_precision=policy.refine.target_precision,
            seed=policy.seed,
        )

    def _fit_on_train_answers(
        self, engine: Engine, name: str, policy: SessionPolicy, emit: Emitter
    ) -> FittedProbe:
        """A probe fitted on `engine`'s greedy answers to the first `probe.items` train
        prompts, its layer chosen by a sweep."""
        return fit_session_probe(
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

    def _shipped_gate(
        self, state: SessionState, policy: SessionPolicy, emit: Emitter
    ) -> dict[str, Any]:
        """`refine.gate_rule: accuracy_floor`: the abstain cut-off shipped with the best
        version (model.json), chosen on its dev answers (their verdicts; the risks of the
        probe fitted on it, from one prefill of their prompts) for the accuracy floor; {}
        where the rule does not apply."""
        from probes.artifact import load_probe  # the probes stack loads only where it runs
        from probes.evaluation import score_prompts

        source = floor_gate_source(state, policy)
        if source is None:
            return {}
        cycle, initial_accuracy, probe_name = source
        best = state["best_version"]
        answers = cycle_data.load_dev_answers(self.artifacts, cycle, best)
        probe = load_probe(self.artifacts.root / probe_name)
        engine = self.versions.engine(state, best)
        risks = score_prompts(engine, probe, [answer.prompt for answer in answers])
        min_accuracy = policy.monitor.accuracy_floor * initial_accuracy
        saved = Thresholds.chosen(state.get("thresholds"))
        thresholds = floor_gate(risks, [a.correct for a in answers], min_accuracy, saved)
        emit.note(
            f"gate shipped with {best}: abstain above risk {thresholds['high']:.3f}, chosen "
            f"on {len(answers)} dev answers for dev accuracy >= {min_accuracy:.1%}",
            thresholds=thresholds,
        )
        return {"thresholds": thresholds}

    def _final_probe(
        self, state: SessionState, policy: SessionPolicy, emit: Emitter
    ) -> dict[str, Any]:
        """A probe for the best version when the session's was fitted on another (a
        version promoted in the last cycle was never sampled), so the session ends with a
        gate for the model it made: fitted on the best version's own dev answers (their
        prefill states, no new generation); under `refine.gate_rule: accuracy_floor`, whose
        cut-off is chosen on those dev answers, on its greedy train-split answers instead
        (as the start probe is), so that dev is out of the probe's sample. The update, or
        {} when none is needed or none could be fitted."""
        best, fingerprint = (
            state["best_version"],
            state["versions"][state["best_version"]]["fingerprint"],
        )
        evaluated = [h.cycle for h in history_of(state) if h.version == best]
        if state.get("probe_fingerprint") == fingerprint or not evaluated:
            return {}
        engine = self.versions.engine(state, best)
        fitted = self._fit_final_probe(engine, best, evaluated[-1], policy, emit)
        self._record_probe(fitted, emit)
        return loop_probe_update(fitted, fingerprint, state)

    def _test_items(self, policy: SessionPolicy) -> list[Item]:
        """The test items scored at the end (the monitor budgets time for them)."""
        return final_test_items(self.task, policy.seed, policy.evaluate)

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
        state: SessionState,
    ) -> acquiring.CyclePrompts:
        """The cycle's prompts per the acquire plan, guided by the probe `risk_fn` (and,
        ordered by what the samples showed, by every earlier cycle's verdicts)."""
        order, cycle = policy.acquire.order, state.get("cycle", 0) + 1
        return acquiring.cycle_prompts(
            engine,
            self.task,
            plan,
            candidate_factor=policy.acquire.candidate_factor,
            cycle=cycle,
            seed=policy.seed,
            risk_fn=risk_fn,
            order=order,
            seen=self._prompt_history(state) if order != "uniform" else acquiring.PromptHistory(),
            k=policy.acquire.samples_per_prompt,
        )

    def _prompt_history(self, state: SessionState) -> acquiring.PromptHistory:
        """Every earlier cycle's samples as evidence per prompt, and the probe's skill on
        the latest evaluation's fresh labels."""
        history = history_of(state)
        return acquiring.PromptHistory(
            cycle_data.prompt_evidence(
                self.artifacts, state.get("drawn_by") or [], state["current_version"]
            ),
            history[-1].probe_auroc if history else None,
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

    def _grpo_groups(
        self, attempts: list[acquiring.Attempt], policy: SessionPolicy, cycle: int
    ) -> dict[str, int]:
        """For GRPO, how many prompts' samples got different rewards (what it trains on)."""
        if method_at(policy.optimize, cycle) != "grpo":
            return {}
        reward, abstentions = policy.optimize.grpo_reward, policy.refine.abstentions
        return {"groups": grpo.informative_prompts(self.task, attempts, reward, abstentions)}

    def _train(
        self,
        state: SessionState,
        name: str,
        settings: TrainSettings,
        emit: Emitter,
        policy: SessionPolicy,
    ) -> TrainResult:
        """A new version from the current one: GRPO on the cycle's groups, or SFT/DPO on
        its selected data, in this process or (backend 'ray') in Ray Train once the
        generation actors have handed back their CPUs/GPUs."""
        on_step: StepFn = lambda step, total, loss: emit(  # noqa: E731
            "training", Progress(done=step, total=total, loss=loss)
        )
        version_dir = self.versions.version_dir(name)
        if settings.method == "grpo":
            result: TrainResult = self._train_grpo(state, settings, version_dir, on_step, policy)
        elif policy.cluster.backend == "ray":
            sft, pairs = cycle_data.load_data(self.artifacts, state.get("data") or {})
            self.versions.release()
            result = train_version_on_ray(
                self.versions.source(state),
                sft=sft,
                pairs=pairs,
                settings=settings,
                version_dir=version_dir,
                cluster=policy.cluster,
                on_step=on_step,
            )
        else:
            sft, pairs = cycle_data.load_data(self.artifacts, state.get("data") or {})
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

    def _train_grpo(
        self,
        state: SessionState,
        settings: TrainSettings,
        version_dir: Path,
        on_step: StepFn,
        policy: SessionPolicy,
    ) -> grpo.GRPOResult:
        """GRPO on the groups acquire sampled this cycle (their token ids, no new
        generation), rewarded by the policy's reward."""
        attempts = cycle_data.load_attempts(self.artifacts, state["attempts"] or "")
        model, tokenizer = self.versions.trainable_copy(state)
        groups = grpo.groups_from_attempts(
            self.task,
            attempts,
            tokenizer,
            reward=policy.optimize.grpo_reward,
            abstentions=policy.refine.abstentions,
        )
        return grpo.train_grpo(
            model,
            tokenizer,
            groups,
            settings=settings,
            grpo=grpo.GRPOSettings.from_policy(
                policy.optimize, temperature=policy.acquire.temperature
            ),
            version_dir=version_dir,
            on_step=on_step,
        )

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
