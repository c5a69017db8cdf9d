"""`autodidact run | resume | sessions | trace | answer`: sessions from the command line.
The console output is one consumer of the graph's event stream."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import vlm as image_path
from cli.common import (
    DEFAULT_ROOT,
    ImageOption,
    JsonOption,
    Loaders,
    ModelOption,
    PathOption,
    PolicyFileOption,
    PresetOption,
    RootOption,
    SetOption,
    StoreOption,
    VerifierOption,
    cli_command,
    compact_table,
    console,
    err_console,
    fail,
    fits,
    is_vlm,
    text_task,
)
from cli.gate import (
    HighOption,
    LowOption,
    ProbeOption,
    SessionOption,
    chosen_gate,
    load_probe_folder,
    probe_risk,
)
from cli.interrupts import disk_full, disk_full_line, ending_on_signals, exit_code, stop_line
from cli.view import EventView, console_view, print_cycle_table, print_event
from engines.loading import DEFAULT_MODEL
from probes.calibration import Thresholds

TaskOverride = Annotated[
    str | None, typer.Option("--task", "-t", help="Task suite (overrides the policy's).")
]
ModelOverride = Annotated[
    str | None, typer.Option("--model", "-m", help="Model (overrides the policy's).")
]
TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="Log the session to this MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
        "else ROOT/mlflow.db; `autodidact ui` shows it).",
    ),
]
NoTrackingOption = Annotated[
    bool, typer.Option("--no-tracking", help="Do not log the session to MLflow.")
]


def tracking_overrides(tracking_uri: str | None, no_tracking: bool) -> list[str]:
    """The policy overrides the tracking flags stand for.

    >>> tracking_overrides("http://mlflow:5000", False)
    ['tracking_uri=http://mlflow:5000']
    """
    return ([f"tracking_uri={tracking_uri}"] if tracking_uri else []) + (
        ["tracking=false"] if no_tracking else []
    )


TRACKING_ENV = "AUTODIDACT_TRACKING"  # "off": no session is tracked (the test suite's default)


@contextlib.contextmanager
def session_tracking(policy: Any, session: Any, root: Path, *, resume: bool) -> Iterator[Any]:
    """The session's MLflow tracker (None when tracking is off: the policy's `tracking`,
    `--no-tracking`, or AUTODIDACT_TRACKING=off). Without MLflow installed
    a session still runs, and says how to turn tracking on; an explicit tracking URI
    without it is an error."""
    from storage.mlflow_store import (
        INSTALL_HINT,
        artifact_root_for,
        tracking_available,
        tracking_uri_for,
    )

    if not policy.tracking or os.environ.get(TRACKING_ENV, "").lower() == "off":
        yield None
        return
    if not tracking_available():
        if policy.tracking_uri:
            raise fail(f"--tracking-uri needs MLflow, which is not installed: {INSTALL_HINT}")
        err_console.print(f"[yellow]MLflow tracking off:[/] not installed ({INSTALL_HINT})")
        yield None
        return
    from storage.urls import mask_password
    from views.mlflow_logging import tracked

    uri = tracking_uri_for(root, policy.tracking_uri, dict(os.environ))
    with contextlib.ExitStack() as stack:
        with console.status("opening the MLflow tracking store"):
            tracker = stack.enter_context(
                tracked(session, uri, artifact_root_for(uri), resume=resume)
            )
        console.print(f"tracking: {mask_password(uri)} (`autodidact ui --root {root}` shows it)")
        yield tracker
    if tracker.error is not None:
        err_console.print(f"[yellow]warning:[/] MLflow tracking stopped: {tracker.error}")


def write_report(session: Any, state: Any) -> None:
    """A finished session's `report.html`, written into its folder from its event log and
    artifacts (an interrupted one gets its page from `autodidact report`)."""
    from views.report_html import write_session_report

    if state.get("status") == "finished":
        write_session_report(session.store, session.session_id)


def fan_out(*sinks: Any) -> Callable[[Any], None]:
    """One event consumer that hands each event to every sink that is not None."""
    present = [sink for sink in sinks if sink is not None]

    def consume(event: Any) -> None:
        for sink in present:
            sink(event)

    return consume


def store_url(store: str | None, root: Path) -> str:
    """The store to open: `store`, or the SQLite file under `root`; a `***` password (as a
    saved policy or a printed hint keeps it) is taken from the environment."""
    from storage import default_store_url
    from storage.urls import restore_password

    return restore_password(store or default_store_url(root), os.environ)


def resume_hint(session_id: str, display_url: str, root: Path) -> str:
    """The command that resumes the session: its store and root spelled out, since
    `resume` alone would look in the default SQLite store under ./runs. The password
    stays masked: the hint names the variable that supplies it."""
    from storage.urls import PASSWORD_ENV, has_masked_password

    hint = f"`autodidact resume {session_id} --store {display_url} --root {root}`"
    if has_masked_password(display_url):
        hint += f" (with {PASSWORD_ENV} set to the store's password)"
    return hint


def check_checkpoint(store: Any, session_id: str, root: Path, *, resume: bool) -> None:
    """Before any model loads: `resume` needs the session's checkpoint in this store, one
    it can go on from, and `run` must not start over on top of an existing one."""
    from graph.session import renamed_node_problem

    saved = store.checkpointer.get_tuple({"configurable": {"thread_id": session_id}})
    if resume and saved is None:
        raise fail(
            f"no checkpoint of session {session_id!r} in {store.display_url}: pass the "
            "--store it ran with (`autodidact sessions --store URL` lists a store's sessions)"
        )
    problem = resume and saved and renamed_node_problem(session_id, saved.checkpoint)
    if problem:
        raise fail(problem)
    if not resume and saved is not None:
        raise fail(
            f"session {session_id!r} already exists in {store.display_url}: "
            f"{resume_hint(session_id, store.display_url, root)} continues it, "
            "or pick another --session-id"
        )


def last_words(session: Any, shown: contextlib.ExitStack) -> Callable[[int], None]:
    """What a session does when a signal ends it: `interrupted` in the registry, then
    the progress bars closed. Each on its own: a store that is gone still closes them."""

    def say(_signum: int) -> None:
        with contextlib.suppress(Exception):
            session.mark_interrupted()
        shown.close()

    return say


def farewell(hint: str) -> Callable[[int], None]:
    """The line a signal that ends a session leaves on stderr."""

    def say(signum: int) -> None:
        err_console.print(stop_line(signum, hint), highlight=False, soft_wrap=True)

    return say


def session_failure(error: Exception, display_url: str, hint: str) -> typer.Exit | None:
    """A session stopped by a full disk or a lost store: one line, exit 2, and how to
    resume once that is fixed (the last completed step is checkpointed). None for any
    other error: a bug, to be raised with its traceback."""
    from storage import StoreError

    if disk_full(error):
        return fail(
            f"{disk_full_line(error)}; the last completed step is checkpointed: "
            f"once space is freed, {hint}"
        )
    if isinstance(error, StoreError) or "redis" in type(error).__module__:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return fail(
            f"lost the store {display_url} ({reason.rstrip('.')}); the last "
            f"completed step is checkpointed there: once it is back, {hint}"
        )
    return None


class SessionCommands:
    """`run`, `resume` and `answer`: models and tasks come from `loaders`, a running
    session's events go to the consumer `view` opens."""

    def __init__(self, loaders: Loaders, view: EventView = console_view) -> None:
        self.loaders = loaders
        self.view = view

    def run(
        self,
        task: TaskOverride = None,
        path: PathOption = None,
        verifier: VerifierOption = None,
        model: ModelOverride = None,
        policy_file: PolicyFileOption = None,
        preset: PresetOption = None,
        sets: SetOption = None,
        store: StoreOption = None,
        root: RootOption = DEFAULT_ROOT,
        session_id: Annotated[
            str | None, typer.Option("--session-id", help="Name the session (default: generated).")
        ] = None,
        seed: Annotated[
            int | None,
            typer.Option("--seed", help="Seed for splits, sampling and training (policy seed)."),
        ] = None,
        tracking_uri: TrackingUriOption = None,
        no_tracking: NoTrackingOption = False,
    ) -> None:
        """Run an autonomous improvement session to the monitor's stop."""
        from graph.policy import resolve_policy
        from graph.session import new_session_id
        from tasks import split_sizes_problem

        overrides = list(sets or [])
        overrides += [f"seed={seed}"] if seed is not None else []
        overrides += [f"task={task}"] if task else []
        overrides += [f"task_path={path}"] if path else []
        overrides += [f"task_verifier={verifier}"] if verifier else []
        overrides += [f"model={model}"] if model else []
        overrides += tracking_overrides(tracking_uri, no_tracking)
        policy = resolve_policy(preset, policy_file, overrides)
        suite = self.load_policy_task(policy)
        problem = split_sizes_problem(
            suite.name, [item.group for item in suite.items], seed=policy.seed
        )
        if problem:
            raise fail(problem)
        session = session_id or new_session_id(suite.name)
        url = store_url(store or policy.store, root)
        self._run_session(policy, suite, session, url, root, resume=False)

    def resume(
        self,
        session_id: Annotated[str, typer.Argument(help="The session to continue.")],
        store: StoreOption = None,
        root: RootOption = DEFAULT_ROOT,
        tracking_uri: TrackingUriOption = None,
        no_tracking: NoTrackingOption = False,
    ) -> None:
        """Continue a session from its last completed step (after a crash, kill or Ctrl-C);
        its MLflow run continues too."""
        from graph.policy import load_saved_policy
        from storage.layout import SessionLayout

        saved = SessionLayout.of(root, session_id).policy
        if not saved.is_file():
            raise fail(
                f"no session {session_id!r} under {SessionLayout.sessions_folder(root)}: "
                f"see `autodidact sessions --root {root}`"
            )
        policy = load_saved_policy(saved)
        policy = policy.model_copy(
            update={"tracking": policy.tracking and not no_tracking}
            | ({"tracking_uri": tracking_uri} if tracking_uri else {})
        )
        self._run_session(
            policy,
            self.load_policy_task(policy),
            session_id,
            store_url(store or policy.store, root),
            root,
            resume=True,
        )

    def load_policy_task(self, policy: Any) -> Any:
        from tasks import with_verifier

        path = Path(policy.task_path) if policy.task_path else None
        suite = with_verifier(
            text_task(self.loaders.load_task(policy.task, path)), policy.task_verifier
        )
        if not suite.split("train", seed=policy.seed):
            raise fail(
                f"task {suite.name!r} has no train items: add rows (or groups) so the train split is not empty"
            )
        return suite

    def _run_session(
        self, policy: Any, suite: Any, session_id: str, url: str, root: Path, *, resume: bool
    ) -> None:
        from graph.session import Session
        from graph.state import RECORD_TYPES
        from storage import open_store

        problem = self.loaders.engine_problem(policy.engine) or self.loaders.backend_problem(
            policy.cluster.backend
        )
        if problem:
            raise fail(problem)
        root.mkdir(parents=True, exist_ok=True)
        with open_store(url, root, restorable=RECORD_TYPES) as opened:
            check_checkpoint(opened, session_id, root, resume=resume)
            for warning in opened.warnings:
                err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
            engine = self.loaders.engine(policy.model, policy.engine, policy.cluster)
            session = Session(session_id, policy, opened, suite, engine)
            verb = "resuming" if resume else "session"
            console.print(
                f"{verb} [bold]{session_id}[/]: {suite.name} on {engine.name}; store {opened.display_url}; files in {session.folder}"
            )
            hint = resume_hint(session_id, opened.display_url, root)
            try:
                with contextlib.ExitStack() as shown:
                    view = shown.enter_context(self.view())
                    tracker = shown.enter_context(
                        session_tracking(policy, session, root, resume=resume)
                    )
                    with ending_on_signals(last_words(session, shown), farewell(hint)):
                        state = session.run(resume=resume, on_event=fan_out(view, tracker))
                        write_report(session, state)  # before the tracker closes: it logs it
            except KeyboardInterrupt:  # Ctrl-C outside `ending_on_signals`
                err_console.print(stop_line(signal.SIGINT, hint), highlight=False, soft_wrap=True)
                raise typer.Exit(exit_code(signal.SIGINT)) from None
            except Exception as error:
                failure = session_failure(error, opened.display_url, hint)
                if failure is None:
                    raise
                raise failure from None
        print_cycle_table(dict(state))
        console.print(f"session files: {session.folder}")
        report = session.layout.report_html
        if report.is_file():
            console.print(f"report (opens from disk): {report}", highlight=False, soft_wrap=True)

    def answer(
        self,
        question: Annotated[str, typer.Argument(help="The question.")],
        model: ModelOption = DEFAULT_MODEL,
        probe: ProbeOption = None,
        refine: Annotated[
            str,
            typer.Option(
                "--refine", help="none, self_consistency, abstain, best_of_n, risk_adaptive."
            ),
        ] = "risk_adaptive",
        low: LowOption = Thresholds().low,
        high: HighOption = Thresholds().high,
        session: SessionOption = None,
        root: RootOption = DEFAULT_ROOT,
        k: Annotated[
            int | None,
            typer.Option(
                min=1, help="Samples for self-consistency / best-of-N [default: policy's refine.k]"
            ),
        ] = None,
        max_new_tokens: Annotated[
            int | None,
            typer.Option(min=1, help="Token budget [default: policy's evaluate.max_new_tokens]"),
        ] = None,
        image: ImageOption = None,
    ) -> None:
        """Answer a question with inference refinement; prints the risk and the route taken.
        k, the samples' temperature and the token budget default to the policy's. With a
        vision-language model's folder as --model, the question is about --image."""
        from agents.evaluate import EvaluatePolicy
        from agents.refine import STRATEGIES, RefinePolicy, refine_answers

        if refine not in STRATEGIES:
            raise fail(f"--refine must be one of {', '.join(STRATEGIES)} (got {refine!r})")
        gated = refine in ("abstain", "risk_adaptive")
        gate = chosen_gate(model, probe, low, high, session=session, root=root, needs_probe=gated)
        vlm = is_vlm(gate.model)
        image_path.check_image_option(vlm, image, gate.model)
        picture = image_path.open_image(image) if image is not None else None
        fitted = (
            load_probe_folder(gate.probe) if gate.probe is not None else None
        )  # before the model
        if vlm and picture is not None:
            if fitted is None and gated:
                err_console.print("[yellow]no --probe: no risk to route on, answering greedily[/]")
            result = image_path.answer(
                self.loaders.load_vlm_engine(gate.model),
                question,
                picture,
                fitted=fitted,
                strategy=refine,
                thresholds=gate.thresholds,
                k=k or RefinePolicy().k,
                temperature=RefinePolicy().temperature,
                max_new_tokens=max_new_tokens or EvaluatePolicy().max_new_tokens,
            )
            return print_answer(result)
        engine = self.loaders.load_engine(gate.model)
        risk_fn = None if gate.probe is None else probe_risk(fitted, engine, gate.probe)
        if risk_fn is None and gated:
            err_console.print("[yellow]no --probe: no risk to route on, answering greedily[/]")
        (result,) = refine_answers(
            engine,
            [question],
            strategy=refine,  # type: ignore[arg-type]
            thresholds=gate.thresholds,
            k=k or RefinePolicy().k,
            temperature=RefinePolicy().temperature,
            max_new_tokens=max_new_tokens or EvaluatePolicy().max_new_tokens,
            risk_fn=risk_fn,
        )
        print_answer(result)


def print_answer(result: Any) -> None:
    """The risk and route (dim), then the answer."""
    risk = "-" if result.risk is None else f"{result.risk:.3f}"
    console.print(f"[dim]risk {risk}; route {result.route}[/]")
    console.print(result.text, highlight=False)


def where_flags(store: str | None, root: Path, display_url: str) -> str:
    """The `--store`/`--root` a follow-up command needs to look where this one did."""
    return (f" --store {display_url}" if store else "") + f" --root {root}"


def open_existing_store(store: str | None, root: Path) -> Any:
    """Open the store to read from; a SQLite file that is not there is an error, and is
    not created (nor its folder): reading never writes."""
    from storage import open_store
    from storage.urls import backend_of, sqlite_path

    url = store_url(store, root)
    if backend_of(url) == "sqlite":
        path = sqlite_path(url)
        if path != ":memory:" and not Path(path).is_file():
            raise fail(
                f"no sessions in {root} (no store at {path}): pass the --root/--store "
                "the session ran with"
            )
    return open_store(url, root)


def sessions(
    store: StoreOption = None, root: RootOption = DEFAULT_ROOT, as_json: JsonOption = False
) -> None:
    """The sessions in a store: status, cycles, best dev accuracy. --json: one JSON object
    per session, one per line (JSON Lines)."""
    with open_existing_store(store, root) as opened:
        rows = opened.events.list_sessions()
        url = opened.display_url
    if as_json:
        for r in rows:
            print(json.dumps({**r.model_dump(mode="json"), "status": r.shown_status}))
        return
    print_sessions(rows, f"sessions in {url}")
    if not rows:
        console.print(f"no sessions in {url}: --root/--store must match the run's")


def print_sessions(rows: list[Any], title: str) -> None:
    """A table when it fits the terminal; else one block per session (its id on a line of
    its own): an id or a number is never cut."""
    console.print(title, highlight=False, soft_wrap=True)
    table = compact_table(
        "", "session", "status", "task", "model", "cycles", "best dev acc", wrap=("task", "model")
    )
    for r in rows:
        table.add_row(r.session_id, r.shown_status, r.task, r.model, str(r.cycles), _best(r))
    if fits(table):
        console.print(table)
        return
    for r in rows:
        console.print(f"[bold]{r.session_id}[/]", highlight=False, soft_wrap=True)
        console.print(
            f"  {r.shown_status}; {r.cycles} cycles; best dev accuracy {_best(r)}; "
            f"{r.task} on {r.model}",
            highlight=False,
        )


def _best(info: Any) -> str:
    return "-" if info.best_accuracy is None else f"{info.best_accuracy:.1%}"


def trace(
    session_id: Annotated[str, typer.Argument(help="The session to inspect.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until it ends.")
    ] = False,
    store: StoreOption = None,
    root: RootOption = DEFAULT_ROOT,
    as_json: JsonOption = False,
) -> None:
    """A session's timeline: each node with its duration, every decision with its reason
    and evidence, key metrics. --follow prints a running session live. --json: one event
    per line (JSON Lines)."""
    with open_existing_store(store, root) as opened:
        info = opened.events.get_session(session_id)
        if info is None:
            flags = where_flags(store, root, opened.display_url)
            raise fail(
                f"no session {session_id!r} in {opened.display_url}: see "
                f"`autodidact sessions{flags}`"
            )
        if follow:

            def finished() -> bool:
                current = opened.events.get_session(session_id)
                return current is None or current.shown_status != "running"

            for event in opened.events.follow(session_id, stop=finished):
                print_event(event, as_json)
            return
        events = opened.events.read(session_id)
        for event in events:
            print_event(event, as_json)
        if not as_json and info.shown_status != "finished":
            hint = resume_hint(session_id, opened.display_url, root)
            console.print(unfinished_line(info.shown_status, events, hint), highlight=False)


def unfinished_line(status: str, events: list[Any], hint: str) -> str:
    """The line under the trace of a session that has not finished: where it stopped (or
    is), and how to continue it."""
    last = events[-1] if events else None
    where = f" in {last.node} (cycle {last.cycle})" if last and last.node else ""
    line = f"session {status}{where} after {len(events)} logged events"
    return line + (f"; {hint} continues it" if status == "interrupted" else "")


def register(app: typer.Typer, loaders: Loaders, view: EventView = console_view) -> None:
    commands = SessionCommands(loaders, view)
    for name, fn in (
        ("run", commands.run),
        ("resume", commands.resume),
        ("sessions", sessions),
        ("trace", trace),
        ("answer", commands.answer),
    ):
        app.command(name)(cli_command(fn))
