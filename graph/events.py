"""Typed events out of the graph's nodes, through LangGraph's custom stream, and the one
codec that writes and reads them.

An event's `data` is one record, named by its `data_type`: a version's dev metrics are a
`CycleMetrics`, the monitor's choice a `Decision`, a planner's a `PlannedChoice`, and the
small records below are the rest. The `Emitter` writes them (the envelope's coarse `kind`
follows from the record); `payload(event)` reads one back, and readers dispatch on its
class, never on the data's keys.

Each node gets an `Emitter`; every event carries an idempotency key
(`c{cycle}/{node}/{n}`) so a node re-run after a crash re-emits the same keys and the
event log keeps one copy. The envelope is the store's record, `storage.records.Event`.

Versions: 2 names the `data_type`; 1 wrote the same data without it, and `v1_data_type`
tells it from the envelope (a metric's node) or the whole record (an action's data is a
`PlannedChoice` or not): the one reader that infers a kind, and only for version 1. A
newer envelope is refused where the log is read (`storage.events.decode_event`), a newer
agents' record (its own `schema_version`) here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.records import CycleMetrics, Decision, PlannedChoice
from storage.errors import EventDataError, EventVersionError
from storage.records import EVENT_SCHEMA_VERSION, Event, EventKind

# -- the records an event's data holds, besides the agents' own ----------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeStart(_Payload):
    """A node began (its message says on what)."""


class NodeEnd(_Payload):
    """A node finished: its wall time, and the numbers it reports beside it (tokens,
    loss, AUROCs: `summary`)."""

    model_config = ConfigDict(extra="allow")

    seconds: float

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Progress(_Payload):
    """How far a long step is (`loss`: only training's steps carry it). Never logged."""

    done: int
    total: int
    loss: float | None = None


class Note(_Payload):
    """Something a node did, said by the message; `details`: what goes with it (select's
    counts and artifact names), for display."""

    model_config = ConfigDict(extra="allow")

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TestScores(_Payload):
    """The initial or the final model on the test split, scored once at the end."""

    __test__ = False  # not a pytest class

    role: str  # "initial" or "final"
    version: str
    test_accuracy: float
    test_hallucination_rate: float
    test_abstention_rate: float | None = None  # None: written before it was recorded
    test_answered_precision: float | None = None
    test_probe_aurc: float | None = None
    test_truncated: int
    n_test: int


class ProbeSaved(_Payload):
    """A fitted probe, saved as an artifact of the session."""

    name: str
    feature: str | None
    val_auroc: float | None


class Failure(_Payload):
    """Something that did not work; the message says what."""


class SessionEnd(_Payload):
    """The closing report: test scores of the initial and final model, every cycle's
    row, the decisions and why the session stopped."""

    initial: dict[str, Any]
    final: dict[str, Any]
    cycles: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    stop_reason: str
    wall_seconds: float


Payload = (
    NodeStart
    | NodeEnd
    | Progress
    | Note
    | PlannedChoice
    | CycleMetrics
    | TestScores
    | Decision
    | ProbeSaved
    | Failure
    | SessionEnd
)
Record = TypeVar("Record", bound=BaseModel)

# data type -> (the envelope's coarse kind, the record)
DATA_TYPES: dict[str, tuple[EventKind, type[BaseModel]]] = {
    "node_start": ("node_start", NodeStart),
    "node_end": ("node_end", NodeEnd),
    "progress": ("progress", Progress),
    "note": ("action", Note),
    "plan": ("action", PlannedChoice),
    "dev_metrics": ("metric", CycleMetrics),
    "test_scores": ("metric", TestScores),
    "decision": ("decision", Decision),
    "probe_saved": ("artifact", ProbeSaved),
    "error": ("error", Failure),
    "session_end": ("session", SessionEnd),
}
DATA_TYPE_OF = {record: name for name, (_, record) in DATA_TYPES.items()}
V1_DATA_TYPES: dict[EventKind, str] = {  # version 1's kinds that held one record each
    "node_start": "node_start",
    "node_end": "node_end",
    "progress": "progress",
    "decision": "decision",
    "artifact": "probe_saved",
    "error": "error",
    "session": "session_end",
}


# -- the codec -------------------------------------------------------------------------------


def envelope(record: Payload) -> tuple[EventKind, str, dict[str, Any]]:
    """The coarse kind, the data type and the data an event of `record` is written with.

    >>> envelope(Failure())
    ('error', 'error', {})
    >>> envelope(Progress(done=1, total=4))
    ('progress', 'progress', {'done': 1, 'total': 4})
    """
    data_type = DATA_TYPE_OF[type(record)]
    # progress leaves out what it was not given: `loss` is training's alone
    data = record.model_dump(exclude_unset=isinstance(record, Progress))
    return DATA_TYPES[data_type][0], data_type, data


def payload(event: Event) -> Payload:
    """The record an event's data holds, checked against its data type (`EventDataError`:
    it is not that record)."""
    data_type = v1_data_type(event) if event.schema_version == 1 else event.data_type
    kind, record = DATA_TYPES.get(data_type or "", (None, None))
    if record is None or kind != event.kind:
        raise EventDataError(
            f"event {event.key!r} of session {event.session_id!r}: data type {data_type!r} "
            f"is not one of {event.kind!r} (schema version {event.schema_version})"
        )
    _refuse_newer_record(record, event)
    try:
        value: Payload = record.model_validate(event.data)  # type: ignore[assignment]
    except ValidationError as error:
        raise EventDataError(
            f"event {event.key!r} of session {event.session_id!r}: its data is not a valid "
            f"{data_type} ({_first_error(error)})"
        ) from None
    return _with_cycle(value, event)


def records_of(record: type[Record], events: Iterable[Event]) -> list[Record]:
    """The `record`s the events hold, in order (the others' left out)."""
    return [value for value in map(payload, events) if isinstance(value, record)]


def v1_data_type(event: Event) -> str:
    """The data type of a version-1 event, which did not name it: a metric's by its node
    (the test split is scored in finalize, dev metrics elsewhere), an action's by whether
    its data is a whole planner's choice; every other kind held one record."""
    if event.kind == "metric":
        return "test_scores" if event.node == "finalize" else "dev_metrics"
    if event.kind == "action":
        try:
            PlannedChoice.model_validate(event.data)
        except ValidationError:
            return "note"
        return "plan"
    return V1_DATA_TYPES[event.kind]


def _refuse_newer_record(record: type[BaseModel], event: Event) -> None:
    """The agents' records carry their own schema version: one newer than this code's
    is refused as a newer event is."""
    known = record.model_fields.get("schema_version")
    written = event.data.get("schema_version")
    if known is not None and isinstance(written, int) and written > known.default:
        raise EventVersionError(
            f"event {event.key!r} of session {event.session_id!r} holds a "
            f"{DATA_TYPE_OF[record]} of schema version {written}, newer than this "
            f"autodidact reads (up to {known.default}): read the session with the "
            "autodidact that wrote it, or upgrade this one"
        )


def _with_cycle(value: Payload, event: Event) -> Payload:
    """A decision or a planner's choice from before they carried their cycle (their
    schema version 1) takes the event's."""
    if isinstance(value, Decision | PlannedChoice) and value.schema_version < 2:
        return value.model_copy(update={"cycle": event.cycle or 0})
    return value


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc']) or 'data'}: {first['msg']}"


# -- writing ---------------------------------------------------------------------------------


@dataclass
class Emitter:
    writer: Callable[[Any], None]
    node: str
    cycle: int
    count: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __call__(self, message: str, record: Payload) -> None:
        kind, data_type, data = envelope(record)
        key = f"c{self.cycle}/{self.node}/{'p' if kind == 'progress' else ''}{self.count}"
        if kind != "progress":
            self.count += 1
        self.writer(
            {
                "schema_version": EVENT_SCHEMA_VERSION,
                "key": key,
                "ts": time.time(),
                "kind": kind,
                "node": self.node,
                "cycle": self.cycle,
                "message": message,
                "data_type": data_type,
                "data": data,
            }
        )

    def note(self, message: str, **details: Any) -> None:
        """Something the node did, with what goes with it."""
        self(message, Note(**details))

    def progress(self, what: str) -> Callable[[int, int], None]:
        """An `on_progress(done, total)` callback that emits progress events."""

        def report(done: int, total: int) -> None:
            self(what, Progress(done=done, total=total))

        return report

    def start(self, message: str = "") -> None:
        self(message or f"{self.node} started", NodeStart())

    def end(self, message: str = "", **summary: Any) -> None:
        seconds = round(time.perf_counter() - self.started, 3)
        self(message or f"{self.node} done", NodeEnd(seconds=seconds, **summary))
