"""Typed events out of the graph's nodes, through LangGraph's custom stream.

Each node gets an `Emitter`; every event carries an idempotency key
(`c{cycle}/{node}/{n}`) so a node re-run after a crash re-emits the same keys and the
event log keeps one copy. The event's layout (`EventKind`, its schema version) is the
store's record, `storage.records.Event`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage.records import EVENT_SCHEMA_VERSION, EventKind


@dataclass
class Emitter:
    writer: Callable[[Any], None]
    node: str
    cycle: int
    count: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __call__(self, kind: EventKind, message: str, **data: Any) -> None:
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
                "data": data,
            }
        )

    def progress(self, what: str) -> Callable[[int, int], None]:
        """An `on_progress(done, total)` callback that emits progress events."""

        def report(done: int, total: int) -> None:
            self(kind="progress", message=what, done=done, total=total)

        return report

    def start(self, message: str = "") -> None:
        self("node_start", message or f"{self.node} started")

    def end(self, message: str = "", **data: Any) -> None:
        self(
            "node_end",
            message or f"{self.node} done",
            seconds=round(time.perf_counter() - self.started, 3),
            **data,
        )
