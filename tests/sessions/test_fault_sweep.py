"""Fault injection at every step: a tiny session SIGKILLed at a named kill point (inside
every node, inside a checkpoint write, an event append, an artifact write) or at a seeded
random moment, then resumed by a new process, ends exactly as an uninterrupted run of the
same policy (the wall-clock budget rule off, a fixed number of cycles): the same event
history (every event once, in order, with its message and data, wall times left out), the
same decisions, metrics, datasets and weights, and the same files in the session folder
(no temp file left, no version folder the state does not know). SQLite, and Redis where
one is provided (`make test`).

The workers are forked from one warm parent (tests/warm_workers.py), so a kill and its
resume cost seconds, not a fresh interpreter's imports each; the kill points are patched
into the worker (tests/kill_points.py), which writes a marker just before it dies. With
AUTODIDACT_FAULT_SWEEP_OUT set, each kill appends one JSON line there; the README's
figure comes from them (scripts/fault_sweep_figure.py)."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.session_fingerprint import strip_wall_times
from storage import ArtifactStore, Event, Store, open_store
from storage.layout import SessionLayout
from tests.kill_points import NODES, parse, where
from tests.session_worker import Outcome, checkpoint_values, outcome
from tests.warm_workers import WarmWorkers

UNBUDGETED = ("monitor.project_wall_budget=false", "monitor.max_wall_minutes=10000")
SUMMARY_ENV = "AUTODIDACT_FAULT_SWEEP_OUT"

# NAME:N dies the N-th time the session reaches NAME (tests/kill_points.py). The tiny
# session: fit_probe_on_answers, baseline, then acquire, select, refit_probe_on_samples,
# optimize, evaluate, monitor twice, then finalize.
NODE_KILLS = [
    f"node.{node}:{2 if node in ('acquire', 'evaluate', 'monitor') else 1}" for node in NODES
]
# each with where it lands in the reference, checked, so that a change to the graph that
# moves a kill fails here rather than quietly testing another moment
STORE_KILLS = {
    "checkpoint.put:8": "after optimize #1",  # v1 in place, its writes saved, no checkpoint
    "checkpoint.put_writes:5": "after select #1",  # cycle 1's datasets written, not recorded
    "event.append:20": "c1/optimize/3",  # optimize's last event, after its node_end
    "artifact.write:4": "in select #1",  # cycle 1's SFT set in its temp file
    "artifact.manifest:10": "in optimize #1",  # v1 renamed into place, not yet in the manifest
}
RANDOM_KILLS = [f"random-{i}" for i in range(3)]
SEED = 20260611

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.integration)]


def comparable(event: Event) -> dict[str, Any]:
    """What two runs of one session must log alike: all but `seq`, `ts` and wall times."""
    fields = ("key", "kind", "node", "cycle", "message", "data")
    return strip_wall_times(event.model_dump(mode="json", include=set(fields)))


@dataclass(frozen=True)
class Finished:
    """A session as the sweep compares it."""

    events: list[dict[str, Any]]  # every logged event, in order (`comparable`)
    outcome: Outcome  # decisions, metrics, dataset and weight hashes, status
    files: list[str]  # every file and folder in the session folder, relative
    artifacts: set[str]  # the manifest's names
    versions: list[str]  # trained versions in the state
    version_folders: list[str]  # ... and under versions/


def finished(store: Store, session: str) -> Finished:
    layout = SessionLayout.of(store.root, session)
    folder, on_disk = layout.folder, layout.versions
    versions = checkpoint_values(store, session).get("versions", {})
    return Finished(
        events=[comparable(e) for e in store.events.read(session)],
        outcome=outcome(store, session),
        files=sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")),
        artifacts={a.name for a in ArtifactStore(folder).entries()},
        versions=sorted(set(versions) - {"v0"}),
        version_folders=sorted(p.name for p in on_disk.iterdir()) if on_disk.is_dir() else [],
    )


@dataclass(frozen=True)
class Backend:
    """One store, its uninterrupted reference session and the kill points it reached."""

    name: str
    url: str
    root: Path
    reference: Finished
    moments: list[str]  # kill points the reference reached, in order

    def landing(self, point: str) -> str:
        """Where `point` lands in the reference: the key of the event an `event.append`
        writes; otherwise `in NODE #k` or `after NODE #k` (the k-th run of the node)."""
        name, n = parse(point)
        if name == "event.append":
            return str(self.reference.events[n - 1]["key"])
        at = [i for i, moment in enumerate(self.moments) if moment == name][n - 1]
        last = next(m for m in reversed(self.moments[:at]) if m.startswith(("node.", "emit.")))
        node = last.split(".", 1)[1]
        runs = self.moments[:at].count(f"node.{node}")
        return f"after {node} #{runs}" if last.startswith("node.") else f"in {node} #{runs + 1}"

    def draw(self, kill: str) -> str:
        """A seeded random moment of the session after its first checkpoint, as NAME:N.

        Drawn from the count of each point, not from their order (which two threads
        interleave), so one seed picks the same moment on every run and machine."""
        # one thread so far; the input checkpointed
        start = self.moments.index("emit.fit_probe_on_answers")
        early, counts = Counter(self.moments[:start]), Counter(self.moments)
        moments = [
            f"{name}:{n}"
            for name in sorted(counts)
            for n in range(early[name] + 1, counts[name] + 1)
        ]
        return random.Random(f"{SEED}/{self.name}/{kill}").choice(moments)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmWorkers]:
    with WarmWorkers(tmp_path_factory.mktemp("warm") / "parent.log") as workers:
        yield workers


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The backend's uninterrupted reference, run by a worker like every kill."""
    name = str(request.param)
    root = tmp_path_factory.mktemp(f"sweep-{name}")
    url = (
        f"sqlite:///{root}/autodidact.db"
        if name == "sqlite"
        else request.getfixturevalue("redis_url")  # skips (or fails in CI) without one
    )
    warm: WarmWorkers = request.getfixturevalue("warm")  # once there is a store to sweep
    session, moments = f"reference-{uuid.uuid4().hex[:8]}", root / "moments.json"
    worker = warm.launch(url, root, session, sets=UNBUDGETED, moments_out=moments)
    assert worker.wait() == 0, worker.output()
    with open_store(url, root) as store:
        reference = finished(store, session)
    assert reference.outcome.status == "finished" and reference.events
    return Backend(name, url, root, reference, json.loads(moments.read_text()))


def differences(
    before: list[Event], after: list[Event], resumed: Finished, reference: Finished
) -> list[str]:
    """Every way the killed-and-resumed session differs from the reference (none: [])."""
    problems = []
    logged = [comparable(e) for e in before]
    if logged != reference.events[: len(logged)]:
        problems.append("what the killed run logged is not the reference's beginning")
    if after[: len(before)] != before:
        problems.append("the resumed run changed what the killed run had logged")
    if [e.seq for e in after] != list(range(1, len(after) + 1)):
        problems.append("the log's seq is not 1..n")
    problems += event_differences(resumed.events, reference.events)
    ours, theirs = resumed.outcome, reference.outcome
    for what in ("status", "decisions", "history", "hashes"):
        if getattr(ours, what) != getattr(theirs, what):
            problems.append(f"{what} differ")
    extra = sorted(set(resumed.files) - set(reference.files))
    missing = sorted(set(reference.files) - set(resumed.files))
    if extra or missing:
        problems.append(f"session folder: left over {extra}, missing {missing}")
    if resumed.artifacts != reference.artifacts:
        problems.append(f"manifest: {sorted(resumed.artifacts ^ reference.artifacts)}")
    if resumed.version_folders != resumed.versions:
        problems.append(f"versions/ holds {resumed.version_folders}, the state {resumed.versions}")
    return problems


def event_differences(events: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[str]:
    if events == reference:
        return []
    keys, expected = [e["key"] for e in events], [e["key"] for e in reference]
    repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
    missing = [k for k in expected if k not in set(keys)]
    first = next(
        (i for i, (a, b) in enumerate(zip(events, reference, strict=False)) if a != b),
        min(len(events), len(reference)),
    )
    return [
        f"events differ from #{first + 1} ({len(events)} logged, {len(reference)} expected): "
        f"missing {missing}, repeated {repeated}, "
        f"got {events[first] if first < len(events) else None}, "
        f"expected {reference[first] if first < len(reference) else None}"
    ]


def record(backend: Backend, kill: str, point: str, problems: list[str]) -> None:
    """One line for the README's figure, when AUTODIDACT_FAULT_SWEEP_OUT names a file."""
    out = os.environ.get(SUMMARY_ENV)
    if not out:
        return
    line = {
        "backend": backend.name,
        "kill": kill,
        "point": point,
        "where": where(parse(point)[0]),
        "identical": not problems,
        "problems": problems,
    }
    with Path(out).open("a") as handle:
        handle.write(json.dumps(line) + "\n")


@pytest.mark.parametrize("kill", [*NODE_KILLS, *STORE_KILLS, *RANDOM_KILLS])
def test_killed_anywhere_then_resumed_ends_like_an_uninterrupted_run(
    kill: str, backend: Backend, warm: WarmWorkers
) -> None:
    point = backend.draw(kill) if kill.startswith("random") else kill
    name, n = parse(point)
    assert backend.moments.count(name) >= n, f"the reference never reaches {point}"
    if kill in STORE_KILLS:
        assert backend.landing(point) == STORE_KILLS[kill], "the graph changed: move the kill"
    kill_and_resume(backend, warm, kill, point, UNBUDGETED)


def kill_and_resume(
    backend: Backend, warm: WarmWorkers, kill: str, point: str, sets: tuple[str, ...]
) -> None:
    """A session with `sets` killed at `point`, resumed by a new worker, and compared with
    the backend's reference (the line for the README's figure recorded)."""
    name, n = parse(point)
    session, url, root = f"kill-{uuid.uuid4().hex[:8]}", backend.url, backend.root
    marker = root / f"{session}.killed"

    first = warm.launch(url, root, session, sets=sets, kill_at=point, kill_marker=marker)
    assert first.wait() == -9, first.output()
    assert marker.read_text() == f"{name}:{n}", "killed at the point, once it was reached"
    with open_store(url, root) as store:
        before = store.events.read(session)

    second = warm.launch(url, root, session, resume=True)
    code = second.wait()
    with open_store(url, root) as store:
        after = store.events.read(session)
        resumed = finished(store, session)
    problems = [f"resume exited {code}"] if code != 0 else []
    problems += differences(before, after, resumed, backend.reference)
    record(backend, kill, point, problems)
    assert code == 0, second.output()
    assert not problems, "\n".join(problems)


# -- a kill during GRPO (issue 24): the trainer's steps between two checkpoints ------------

GRPO_SETS = (*UNBUDGETED, "optimize.method=grpo", "acquire.samples_per_prompt=4")


@pytest.fixture(scope="module")
def grpo_backend(tmp_path_factory: pytest.TempPathFactory, warm: WarmWorkers) -> Backend:
    """The uninterrupted GRPO session on SQLite, run by a worker like every kill."""
    root = tmp_path_factory.mktemp("sweep-grpo")
    url, session, moments = f"sqlite:///{root}/autodidact.db", "reference-grpo", root / "m.json"
    worker = warm.launch(url, root, session, sets=GRPO_SETS, moments_out=moments)
    assert worker.wait() == 0, worker.output()
    with open_store(url, root) as store:
        reference = finished(store, session)
    assert reference.outcome.status == "finished"
    assert any(
        e["node"] == "optimize" and e["kind"] == "node_end" and "step_logs" in e["data"]
        for e in reference.events
    ), "the reference trained with GRPO"
    return Backend("sqlite-grpo", url, root, reference, json.loads(moments.read_text()))


@pytest.mark.parametrize("kill", ["emit.optimize:3", "node.optimize:1"])
def test_killed_during_grpo_then_resumed_ends_like_an_uninterrupted_run(
    kill: str, grpo_backend: Backend, warm: WarmWorkers
) -> None:
    name, n = parse(kill)
    assert grpo_backend.moments.count(name) >= n, f"the reference never reaches {kill}"
    kill_and_resume(grpo_backend, warm, kill, kill, GRPO_SETS)
