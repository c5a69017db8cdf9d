"""What session commands print: the live console view of a session's event stream, the
cycle table at its end, and `trace`'s event lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from rich import box
from rich.progress import Progress
from rich.table import Table

from cli.common import console, new_progress

if TYPE_CHECKING:  # the records are imported where read: the CLI starts without them
    from graph.events import Progress as Steps
    from storage import Event

EventView = Callable[[], AbstractContextManager[Callable[[Any], None]]]
"""Opens the consumer a running session's events go to (`console_view`; tests tap it)."""


class ConsoleView:
    """Progress bars for progress events, one line per decision, metric and action."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        from agents.records import PlannedChoice
        from graph.events import Progress, payload

        record = payload(event)
        if isinstance(record, Progress):
            self._bar(event, record)
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
        elif isinstance(record, PlannedChoice) and record.source == "rules":
            return  # a plan the policy's rules made: in the trace, not worth a console line
        elif event.kind in ("action", "artifact", "session") or (
            event.kind == "node_end" and not event.message.endswith(" done")
        ):
            console.print(f"{prefix} {event.message}", highlight=False)

    def _bar(self, event: Event, steps: Steps) -> None:
        label = f"c{event.cycle} {event.node}: {event.message}"
        total, done = steps.total or 1, steps.done or 0
        if label not in self.bars:
            self.bars[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.bars[label], completed=done, total=total)

    def _close_bars(self) -> None:
        for task_id in self.bars.values():
            self.progress.remove_task(task_id)
        self.bars.clear()


@contextmanager
def console_view() -> Iterator[ConsoleView]:
    with new_progress() as progress:
        yield ConsoleView(progress)


def print_cycle_table(state: dict[str, Any]) -> None:
    """Two tables that fit 80 columns (nothing cut): each version's dev numbers and what
    its cycle cost, then the probe on the version's fresh dev labels beside the baselines."""
    final = state.get("final") or {}
    rows = final.get("cycles", [])
    cycles = _table("cycles", "cycle", "version", "dev acc", "halluc.", "abstain", "tokens",
                    "wasted", "decision")  # fmt: skip
    probe = _table(
        "probe on each version's fresh dev labels (forecast = 1 - mean risk)",
        "cycle", "version", "dev acc", "forecast", "AUROC", "last probe", "logprob", "entropy",
    )  # fmt: skip
    for row in rows:
        cycle, version, accuracy = str(row["cycle"]), row["version"], f"{row['accuracy']:.1%}"
        cycles.add_row(
            cycle,
            version,
            accuracy,
            f"{row['hallucination_rate']:.1%}",
            _pct(row.get("abstention_rate")),
            str(row.get("tokens_sampled") or "-"),
            _pct(row.get("wasted_share")),
            row.get("decision") or "",
        )
        probe.add_row(
            cycle,
            version,
            accuracy,
            _pct(row.get("predicted_accuracy")),
            *(_num(row.get(k)) for k in PROBE_COLUMNS),
        )
    console.print(cycles)
    console.print(probe)
    if final:
        initial, last = final["initial"], final["final"]
        console.print(
            f"test accuracy: initial {initial['version']} {initial['test_accuracy']:.1%} -> "
            f"final {last['version']} {last['test_accuracy']:.1%} (n={last['n_test']}); "
            f"{_test_rates(initial, last)}stopped: {final['stop_reason']}; "
            f"{final['wall_seconds']:.0f} s",
            highlight=False,
        )


def _test_rates(initial: dict[str, Any], last: dict[str, Any]) -> str:
    """Hallucination and abstention rates on the test split, initial -> final (empty for a
    report written before they were recorded).

    >>> _test_rates({"test_hallucination_rate": 0.6, "test_abstention_rate": 0.0},
    ...             {"test_hallucination_rate": 0.2, "test_abstention_rate": 0.45})
    'hallucination 60.0% -> 20.0%, abstention 0.0% -> 45.0%; '
    """
    if "test_abstention_rate" not in last or "test_abstention_rate" not in initial:
        return ""
    return (
        f"hallucination {initial['test_hallucination_rate']:.1%} -> "
        f"{last['test_hallucination_rate']:.1%}, abstention "
        f"{initial['test_abstention_rate']:.1%} -> {last['test_abstention_rate']:.1%}; "
    )


PROBE_COLUMNS = ("probe_auroc", "stale_probe_auroc", "logprob_auroc", "entropy_auroc")


def _table(title: str, *headers: str) -> Table:
    """A compact table: no vertical rules, one space between columns, cells that fold
    rather than cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_event(event: Event, as_json: bool) -> None:
    """One line of `trace`: the event's number, cycle, node, kind and message."""
    if as_json:
        print(event.model_dump_json())
        return
    if event.kind == "node_start":
        return
    from agents.records import Decision
    from graph.events import NodeEnd, payload

    record = payload(event)
    extra = ""
    if isinstance(record, NodeEnd):
        extra = f" [dim]({record.seconds:.1f} s)[/]"
    if isinstance(record, Decision):
        evidence = ", ".join(f"{k}={_short(v)}" for k, v in record.evidence.items())
        extra = f"\n      [dim]evidence: {evidence}[/]" if evidence else ""
    style = {"decision": "bold magenta", "metric": "green", "error": "red"}.get(event.kind, "")
    message = f"[{style}]{event.message}[/]" if style else event.message
    console.print(
        f"#{event.seq:<4} c{event.cycle} {event.node or '-':<9} {event.kind:<9} {message}{extra}",
        highlight=False,
    )


def _short(value: Any) -> str:
    """An evidence value for a trace line: whole numbers as integers, others to 3 places.

    >>> _short(2.0), _short(0.12345), _short("v1"), _short(None)
    ('2', '0.123', 'v1', 'None')
    """
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)
