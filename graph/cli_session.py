"""`autodidact run | resume | sessions | trace | answer`: sessions from the command line.
The console output is one consumer of the graph's event stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from graph.console import cli_command, console, err_console, fail

RootOption = Annotated[
    Path, typer.Option("--root", help="Folder for sessions, the SQLite store and runs.")
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="sqlite:///PATH (default: ROOT/autodidact.db) or redis://[:PASSWORD@]HOST:PORT/DB.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def store_url(store: str | None, root: Path) -> str:
    from storage import default_store_url

    return store or default_store_url(root)


class ConsoleView:
    """Progress bars for progress events, one line per decision, metric and action."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        if event.kind == "progress":
            self._bar(event)
            return
        if event.kind == "node_start":
            self._close_bars()
        prefix = f"[dim]c{event.cycle} {event.node:<9}[/]"
        if event.kind == "decision":
            console.print(f"{prefix} [bold magenta]decision[/] {event.message}", highlight=False)
        elif event.kind == "metric":
            console.print(f"{prefix} [green]{event.message}[/]", highlight=False)
        elif event.kind == "error":
            console.print(f"{prefix} [red]{event.message}[/]", highlight=False)
        elif (
            event.kind == "action"
            and event.data.get("stage")
            and event.data.get("source") == "rules"
        ):
            return  # a plan the policy's rules made: in the trace, not worth a console line
        elif event.kind in ("action", "artifact", "session") or (
            event.kind == "node_end" and not event.message.endswith(" done")
        ):
            console.print(f"{prefix} {event.message}", highlight=False)

    def _bar(self, event: Any) -> None:
        label = f"c{event.cycle} {event.node}: {event.message}"
        total, done = event.data.get("total") or 1, event.data.get("done") or 0
        if label not in self.bars:
            self.bars[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.bars[label], completed=done, total=total)

    def _close_bars(self) -> None:
        for task_id in self.bars.values():
            self.progress.remove_task(task_id)
        self.bars.clear()


@contextmanager
def console_view() -> Iterator[ConsoleView]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield ConsoleView(progress)


def print_cycle_table(state: dict[str, Any]) -> None:
    final = state.get("final") or {}
    table = Table(
        "cycle",
        "version",
        "dev acc",
        "halluc.",
        "mean risk",
        "probe AUROC",
        "decision",
        title="cycles",
    )
    for row in final.get("cycles", []):
        table.add_row(
            str(row["cycle"]),
            row["version"],
            f"{row['accuracy']:.1%}",
            f"{row['hallucination_rate']:.1%}",
            _num(row.get("mean_risk")),
            _num(row.get("probe_auroc")),
            row.get("decision") or "",
        )
    console.print(table)
    if final:
        initial, last = final["initial"], final["final"]
        console.print(
            f"test accuracy: initial {initial['version']} {initial['test_accuracy']:.1%} -> "
            f"final {last['version']} {last['test_accuracy']:.1%} (n={last['n_test']}); "
            f"stopped: {final['stop_reason']}; {final['wall_seconds']:.0f} s",
            highlight=False,
        )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run(
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Task suite (overrides the policy's).")
    ] = None,
    path: Annotated[
        Path | None, typer.Option("--path", help="JSONL file for --task jsonl.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model (overrides the policy's).")
    ] = None,
    policy_file: Annotated[Path | None, typer.Option("--policy", help="Policy YAML file.")] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Policy preset: quick or default.")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Policy override key=value (repeatable).")
    ] = None,
    store: StoreOption = None,
    root: RootOption = Path("runs"),
    session_id: Annotated[
        str | None, typer.Option("--session-id", help="Name the session (default: generated).")
    ] = None,
) -> None:
    """Run an autonomous improvement session to the monitor's stop."""
    from graph.policy import resolve_policy
    from graph.session import new_session_id

    overrides = list(sets or [])
    overrides += [f"task={task}"] if task else []
    overrides += [f"task_path={path}"] if path else []
    overrides += [f"model={model}"] if model else []
    policy = resolve_policy(preset, policy_file, overrides)
    suite = load_policy_task(policy)
    session = session_id or new_session_id(suite.name)
    url = store_url(store or policy.store, root)
    _run_session(policy, suite, session, url, root, resume=False)


def load_policy_task(policy: Any) -> Any:
    from graph.cli import load_task

    if policy.task == "jsonl" and not policy.task_path:
        raise fail("task jsonl needs a file: pass --path FILE.jsonl (or task_path in the policy)")
    suite = load_task(policy.task, Path(policy.task_path) if policy.task_path else None)
    if not suite.split("train", seed=policy.seed):
        raise fail(
            f"task {suite.name!r} has no train items: add rows (or groups) so the train split is not empty"
        )
    return suite


def _run_session(
    policy: Any, suite: Any, session_id: str, url: str, root: Path, *, resume: bool
) -> None:
    from graph.cli import load_engine
    from graph.session import Session
    from storage import open_store

    root.mkdir(parents=True, exist_ok=True)
    with open_store(url, root) as opened:
        check_checkpoint(opened, session_id, root, resume=resume)
        engine = load_engine(policy.model)
        session = Session(session_id, policy, opened, suite, engine)
        verb = "resuming" if resume else "session"
        console.print(
            f"{verb} [bold]{session_id}[/]: {suite.name} on {engine.name}; store {opened.display_url}; files in {session.folder}"
        )
        hint = resume_hint(session_id, opened.display_url, root)
        try:
            with console_view() as view:
                state = session.run(resume=resume, on_event=view)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: {hint} continues from the last completed step")
            raise typer.Exit(130) from None
        except Exception as error:
            from storage import StoreError

            if isinstance(error, StoreError) or "redis" in type(error).__module__:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise fail(
                    f"lost the store {opened.display_url} ({reason.rstrip('.')}); the last "
                    f"completed step is checkpointed there: once it is back, {hint}"
                ) from None
            raise
    print_cycle_table(dict(state))
    console.print(f"session files: {session.folder}")


def resume_hint(session_id: str, display_url: str, root: Path) -> str:
    """The command that resumes the session: its store and root spelled out, since
    `resume` alone would look in the default SQLite store under ./runs."""
    return f"`autodidact resume {session_id} --store {display_url} --root {root}`"


def check_checkpoint(store: Any, session_id: str, root: Path, *, resume: bool) -> None:
    """Before any model loads: `resume` needs the session's checkpoint in this store, and
    `run` must not start over on top of an existing one."""
    saved = store.checkpointer.get_tuple({"configurable": {"thread_id": session_id}})
    if resume and saved is None:
        raise fail(
            f"no checkpoint of session {session_id!r} in {store.display_url}: pass the "
            "--store it ran with (`autodidact sessions --store URL` lists a store's sessions)"
        )
    if not resume and saved is not None:
        raise fail(
            f"session {session_id!r} already exists in {store.display_url}: "
            f"{resume_hint(session_id, store.display_url, root)} continues it, "
            "or pick another --session-id"
        )


def resume(
    session_id: Annotated[str, typer.Argument(help="The session to continue.")],
    store: StoreOption = None,
    root: RootOption = Path("runs"),
) -> None:
    """Continue a session from its last completed step (after a crash, kill or Ctrl-C)."""
    from graph.policy import SessionPolicy

    saved = root / "sessions" / session_id / "policy.json"
    if not saved.is_file():
        raise fail(
            f"no session {session_id!r} under {root}/sessions: see `autodidact sessions --root {root}`"
        )
    policy = SessionPolicy.model_validate(json.loads(saved.read_text()))
    _run_session(
        policy,
        load_policy_task(policy),
        session_id,
        store_url(store or policy.store, root),
        root,
        resume=True,
    )


def sessions(
    store: StoreOption = None, root: RootOption = Path("runs"), as_json: JsonOption = False
) -> None:
    """The sessions in a store: status, cycles, best dev accuracy."""
    from storage import open_store

    with open_store(store_url(store, root), root) as opened:
        rows = opened.events.list_sessions()
        url = opened.url
    if as_json:
        print(
            json.dumps(
                [{**r.model_dump(mode="json"), "status": r.shown_status} for r in rows], indent=2
            )
        )
        return
    table = Table(
        "session", "status", "task", "model", "cycles", "best dev acc", title=f"sessions in {url}"
    )
    for r in rows:
        best = "-" if r.best_accuracy is None else f"{r.best_accuracy:.1%}"
        table.add_row(r.session_id, r.shown_status, r.task, r.model, str(r.cycles), best)
    console.print(table)


def trace(
    session_id: Annotated[str, typer.Argument(help="The session to inspect.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until it ends.")
    ] = False,
    store: StoreOption = None,
    root: RootOption = Path("runs"),
    as_json: JsonOption = False,
) -> None:
    """A session's timeline: each node with its duration, every decision with its reason
    and evidence, key metrics. --follow prints a running session live."""
    from storage import open_store

    with open_store(store_url(store, root), root) as opened:
        info = opened.events.get_session(session_id)
        if info is None:
            raise fail(f"no session {session_id!r} in {opened.url}: see `autodidact sessions`")
        if follow:

            def finished() -> bool:
                current = opened.events.get_session(session_id)
                return current is None or current.shown_status != "running"

            for event in opened.events.follow(session_id, stop=finished):
                _print_event(event, as_json)
            return
        for event in opened.events.read(session_id):
            _print_event(event, as_json)


def _print_event(event: Any, as_json: bool) -> None:
    if as_json:
        print(event.model_dump_json())
        return
    if event.kind == "node_start":
        return
    data = event.data
    extra = ""
    if event.kind == "node_end" and "seconds" in data:
        extra = f" [dim]({data['seconds']:.1f} s)[/]"
    if event.kind == "decision":
        evidence = ", ".join(f"{k}={_short(v)}" for k, v in (data.get("evidence") or {}).items())
        extra = f"\n      [dim]evidence: {evidence}[/]" if evidence else ""
    style = {"decision": "bold magenta", "metric": "green", "error": "red"}.get(event.kind, "")
    message = f"[{style}]{event.message}[/]" if style else event.message
    console.print(
        f"#{event.seq:<4} c{event.cycle} {event.node or '-':<9} {event.kind:<9} {message}{extra}",
        highlight=False,
    )


def _short(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def answer(
    question: Annotated[str, typer.Argument(help="The question.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name, folder or cached hub id.")
    ] = "smollm2-135m-instruct",
    probe: Annotated[
        Path | None, typer.Option("--probe", help="Probe folder (from `probe sweep` or a session).")
    ] = None,
    refine: Annotated[
        str,
        typer.Option("--refine", help="none, self_consistency, abstain, best_of_n, risk_adaptive."),
    ] = "risk_adaptive",
    low: Annotated[
        float, typer.Option(help="risk_adaptive: answer greedily at or below this risk.")
    ] = 0.3,
    high: Annotated[
        float, typer.Option(help="Abstain (or use the fallback) above this risk.")
    ] = 0.7,
    k: Annotated[int, typer.Option(help="Samples for self-consistency / best-of-N.")] = 5,
    max_new_tokens: Annotated[int, typer.Option(help="Token budget.")] = 96,
) -> None:
    """Answer a question with inference refinement; prints the risk and the route taken."""
    from agents.refine import STRATEGIES, Thresholds, refine_answers
    from graph.cli import load_engine

    if refine not in STRATEGIES:
        raise fail(f"--refine must be one of {', '.join(STRATEGIES)} (got {refine!r})")
    if not 0 <= low <= high <= 1:
        raise fail(f"need 0 <= --low <= --high <= 1 (got {low}, {high})")
    engine = load_engine(model)
    if probe is not None:
        from probes.artifact import load_probe
        from probes.runtime import RiskScorer

        engine.risk_fn = RiskScorer(load_probe(probe, expected_fingerprint=engine.fingerprint))
    elif refine in ("abstain", "risk_adaptive"):
        err_console.print("[yellow]no --probe: no risk to route on, answering greedily[/]")
    (result,) = refine_answers(
        engine,
        [question],
        strategy=refine,
        thresholds=Thresholds(low, high),  # type: ignore[arg-type]
        k=k,
        temperature=0.7,
        max_new_tokens=max_new_tokens,
        numeric=False,
    )
    risk = "-" if result.risk is None else f"{result.risk:.3f}"
    console.print(f"[dim]risk {risk}; route {result.route}[/]")
    console.print(result.text, highlight=False)


def register(app: typer.Typer) -> None:
    for fn in (run, resume, sessions, trace, answer):
        app.command(fn.__name__)(cli_command(fn))
