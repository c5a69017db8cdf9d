"""Planners over HTTP (issue 25, "Measure"): a served model planning every stage under
constrained decoding, side by side with the rules' session on the same seed.

    python -m benchmarks.planners [--preset default] [--seed 0] [--cycles 2]
                                  [--model smollm2-135m-instruct] [--set key=value ...]
                                  [--root runs/bench-planners] [--out runs/bench-planners.json]
    python -m benchmarks.planners --report runs/bench-planners.json

Two sessions of `--preset` on split seed `--seed`, one after the other in this process
(`graph.session.Session`, SQLite store under `--root`), at most `--cycles` cycles each with
the wall-clock budget rule off (`monitor.project_wall_budget=false`, a 600-minute budget)
and tracking off; every other rule of the preset stands (plateau, regression guard), and a
planner may stop early, so the cycles each ran are reported:

  rules  the preset's planners (the defaults: `rules` at every stage);
  http   `planner.{acquire,select,optimize,monitor}=openai:ID`, ID the model `autodidact
         serve --model MODEL --refine none` lists at `/v1/models`. The server runs as a
         subprocess on a free loopback port (its log: `ROOT/seed-N/http/serve.log`),
         started for this session only and stopped after it whatever happens; the
         planners reach it through OPENAI_BASE_URL (OPENAI_API_KEY set to a placeholder
         for the session). Each proposal goes out with its plan's JSON schema as
         `response_format`, which `serve` decodes under constraint (lm-format-enforcer).
         The requests (langchain-openai's `ChatOpenAI`, `agents.chat_model`) ask for
         greedy answers (temperature 0) within `planner.max_new_tokens`.

Per session, from its recorded planner choices (`state["plans"]`, one `PlannedChoice` per
stage and cycle), per stage and overall, the count and share of choices whose proposal was
  accepted unchanged  (source `planner`: within every bound; for the monitor, an
                       admissible action, kept even where the rules would have chosen
                       another),
  clamped             (`planner+override`, every note a bound's clamp: `name X -> Y (why)`,
                       `agents.planning.clamp`),
  overridden          (`planner+override` with any other note: a strategy, a risk band,
                       a rate or a monitor action the stage's check refused),
  fallback            (`rules(fallback)`: no usable reply, the rules' choice),
  rules               (`rules`: no planner at that stage),
and, for the http session, how many of its choices equal the rules session's at the same
cycle and stage (what was used, the reason aside; after the first choice that differs the
two sessions' facts differ too). A `PlannedChoice` does not say which of its notes are
clamps: they are told by their text (`clamp_note`).

Then the test accuracy of the initial and the final model (the closing report's) and the
gain, and the safety guarantees, checked on the records: no version promoted (a monitor
decision with `promote` on a trained candidate) whose dev accuracy is below the floor
(`monitor.accuracy_floor` x the initial model's dev accuracy, `agents.monitor.
floor_accuracy`; 0 unless the preset sets it: the default's floor is 0) or whose gain on
the best version was beyond `monitor.regression_tolerance` (the regression guard), and the
test split scored exactly once per model (one `TestScores` event per distinct version, the
initial and the final, one `finalize` run). Last, each graph node's wall seconds (summed
over its runs, from the event log) per session: what a planner's call costs inside its
stage's node, and what its choices cost (a planner may ask for self-instruct prompts the
rules never write; with the budget rule off nothing cuts such a session short).

Each session's record (its plans, decisions, dev history and test scores) is merged into
`--out` by (preset, seed, arm) as it ends, and a session the file already holds with the
same settings is skipped: a cut run restarted with the same command loses nothing.
`--report FILE` prints the tables again from it. Ctrl-C stops a session once the node
under way has finished (LangGraph runs it in a worker thread), then the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agents.monitor import MonitorPolicy, floor_accuracy
from agents.records import CycleMetrics, Decision, PlannedChoice
from benchmarks.cluster import STAGES as NODES
from benchmarks.cluster import stage_seconds
from benchmarks.compare_report import PLANNERS, read_runs, save_run, still_to_run
from engines.loading import DEFAULT_MODEL
from graph.events import TestScores, records_of
from graph.policy import SessionPolicy, resolve_policy
from graph.state import RECORD_TYPES
from storage import Event, open_store

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the server runs its code
STAGES = ("acquire", "select", "optimize", "monitor")
OUTCOMES = ("accepted", "clamped", "overridden", "fallback", "rules")
OUTCOME_NAMES = {
    "accepted": "accepted unchanged",
    "clamped": "clamped",
    "overridden": "overridden",
    "fallback": "fallback",
    "rules": "rules (no planner)",
}
ARMS = ("rules", "http")
FIXED = (
    "monitor.project_wall_budget=false",
    "monitor.max_wall_minutes=600",
    "tracking=false",
)
SERVER_API_KEY_ENV = "AUTODIDACT_API_KEY"  # `serve`'s default; unset for the server here
NUMBER = r"[-+]?(?:inf|nan|\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
CLAMP_NOTE = re.compile(rf"^(?P<name>\w+) {NUMBER} -> {NUMBER} \(.+\)$")
Record = dict[str, Any]


# -- pure: what became of each proposal ---------------------------------------------------


def clamp_note(note: str, proposal: Mapping[str, Any] | None) -> bool:
    """Whether a check's note is a bound's clamp of a proposed value (`agents.planning.
    clamp` writes `name X -> Y (why)`), not another rule's override.

    >>> clamp_note("prompts 100 -> 64 (acquire.prompts_per_cycle)", {"prompts": 100})
    True
    >>> clamp_note("learning_rate 0 is not a rate -> 0.0002", {"learning_rate": 0})
    False
    >>> clamp_note("empty risk band [0.9, 0.2] -> the policy's band", {"min_risk": 0.9})
    False
    """
    match = CLAMP_NOTE.match(note)
    return match is not None and match["name"] in (proposal or {})


def outcome(plan: PlannedChoice) -> str:
    """One choice's outcome, one of `OUTCOMES` (the module's docstring says each)."""
    if plan.source == "rules":
        return "rules"
    if plan.source == "rules(fallback)":
        return "fallback"
    if plan.source == "planner":
        return "accepted"
    notes = plan.overrides
    clamped = bool(notes) and all(clamp_note(note, plan.proposal) for note in notes)
    return "clamped" if clamped else "overridden"


def outcome_counts(plans: Iterable[PlannedChoice]) -> dict[str, dict[str, int]]:
    """Per stage (those with a choice, in `STAGES` order) and "all": each outcome's count.

    >>> p = PlannedChoice(stage="select", final={}, source="rules(fallback)", reason="x")
    >>> outcome_counts([p])["all"]
    {'accepted': 0, 'clamped': 0, 'overridden': 0, 'fallback': 1, 'rules': 0}
    """
    plans = list(plans)
    counts: dict[str, dict[str, int]] = {}
    for stage in [s for s in STAGES if any(p.stage == s for p in plans)] + ["all"]:
        found = Counter(outcome(p) for p in plans if stage in ("all", p.stage))
        counts[stage] = {name: found[name] for name in OUTCOMES}
    return counts


def shares(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Each outcome's share of the choices (None: no choice).

    >>> shares({"accepted": 3, "clamped": 1, "overridden": 0, "fallback": 0, "rules": 0})
    {'accepted': 0.75, 'clamped': 0.25, 'overridden': 0.0, 'fallback': 0.0, 'rules': 0.0}
    """
    total = sum(counts.values())
    return {name: (n / total if total else None) for name, n in counts.items()}


def fallback_reasons(plans: Iterable[PlannedChoice]) -> Counter[str]:
    """Why planners' replies were unusable: the error each fallback's reason names, counted.

    >>> p = PlannedChoice(stage="optimize", final={}, source="rules(fallback)",
    ...     reason="planner reply unusable (APIError: boom): policy rules")
    >>> fallback_reasons([p])
    Counter({'APIError: boom': 1})
    """
    prefix = "planner reply unusable ("
    return Counter(
        p.reason.removeprefix(prefix).partition("): ")[0]
        for p in plans
        if p.source == "rules(fallback)"
    )


def same_as_rules(
    plans: Iterable[PlannedChoice], rules_plans: Iterable[PlannedChoice]
) -> dict[str, tuple[int, int]]:
    """Per stage and "all": (choices equal to the other session's at the same cycle and
    stage, choices that have one to compare with); equal = the same values used, the
    reason aside.

    >>> a = PlannedChoice(stage="optimize", final={"epochs": 1, "reason": "x"},
    ...                   source="planner", reason="x")
    >>> b = a.model_copy(update={"final": {"epochs": 1, "reason": "rules"}, "source": "rules"})
    >>> same_as_rules([a], [b])["all"]
    (1, 1)
    """
    theirs = {(p.cycle, p.stage): used(p) for p in rules_plans}
    out: dict[str, tuple[int, int]] = {}
    for stage in (*STAGES, "all"):
        pairs = [
            (used(p), theirs[(p.cycle, p.stage)])
            for p in plans
            if stage in ("all", p.stage) and (p.cycle, p.stage) in theirs
        ]
        if pairs:
            out[stage] = (sum(a == b for a, b in pairs), len(pairs))
    return out


def used(plan: PlannedChoice) -> dict[str, Any]:
    return {k: v for k, v in plan.final.items() if k != "reason"}


# -- pure: the safety guarantees ------------------------------------------------------------


def promotions(decisions: Iterable[Decision]) -> list[tuple[int, str]]:
    """(cycle, version) of each trained candidate a decision promoted (`graph.transitions.
    promotion`: a candidate and `promote`; the evidence names the candidate)."""
    return [
        (d.cycle, str(d.evidence["version"]))
        for d in decisions
        if d.promote and d.evidence.get("version")
    ]


def below_floor(
    history: Sequence[CycleMetrics], decisions: Iterable[Decision], accuracy_floor: float
) -> list[str]:
    """Each promoted version whose dev accuracy (its evaluation in the cycle it was
    promoted) is below the monitor's floor: must be none.

    >>> m = lambda c, acc: CycleMetrics(cycle=c, version=f"v{c}", accuracy=acc,
    ...                                 hallucination_rate=1 - acc)
    >>> d = Decision(cycle=1, action="loop", reason="", evidence={"version": "v1"})
    >>> below_floor([m(0, 0.4), m(1, 0.3)], [d], 0.85)
    ['v1 promoted in cycle 1 with dev accuracy 30.0% < floor 34.0%']
    >>> below_floor([m(0, 0.4), m(1, 0.3)], [d], 0.0)
    []
    """
    floor = floor_accuracy(history, MonitorPolicy(accuracy_floor=accuracy_floor))
    problems = []
    for cycle, version in promotions(decisions):
        evaluated = [h for h in history if h.version == version and h.cycle <= cycle]
        if not evaluated:
            problems.append(f"{version} promoted in cycle {cycle} without a dev evaluation")
        elif evaluated[-1].accuracy < floor - 1e-9:
            problems.append(
                f"{version} promoted in cycle {cycle} with dev accuracy "
                f"{evaluated[-1].accuracy:.1%} < floor {floor:.1%}"
            )
    return problems


def past_guard(decisions: Iterable[Decision], tolerance: float) -> list[str]:
    """Each promotion whose gain on the best version (the decision's evidence, in the
    policy's score) was worse than -tolerance: the regression guard forbids it.

    >>> d = Decision(cycle=2, action="loop", reason="", evidence={"version": "v2", "gain": -0.1})
    >>> past_guard([d], 0.02)
    ['v2 promoted in cycle 2 with gain -10.0% beyond the -2.0% tolerance']
    """
    problems = []
    for d in decisions:
        gain = d.evidence.get("gain")
        promoted = d.promote and d.evidence.get("version")
        if promoted and isinstance(gain, float | int) and gain < -tolerance - 1e-12:
            problems.append(
                f"{d.evidence['version']} promoted in cycle {d.cycle} with gain {gain:+.1%} "
                f"beyond the {-tolerance:.1%} tolerance"
            )
    return problems


def scoring_problems(
    scores: Sequence[TestScores], finalize_runs: int, versions: Sequence[str]
) -> list[str]:
    """What breaks "the test split is scored once per model": `versions` are the initial
    and the final model's (one when the session kept v0).

    >>> s = lambda role, v: TestScores(role=role, version=v, test_accuracy=0.5,
    ...     test_hallucination_rate=0.5, test_truncated=0, n_test=10)
    >>> scoring_problems([s("initial", "v0"), s("final", "v1")], 1, ["v0", "v1"])
    []
    >>> scoring_problems([s("initial", "v0"), s("final", "v0")], 2, ["v0", "v0"])
    ['finalize ran 2 times', 'v0 scored 2 times']
    """
    problems = [] if finalize_runs == 1 else [f"finalize ran {finalize_runs} times"]
    counted = Counter(s.version for s in scores)
    for version in dict.fromkeys([*versions, *counted]):
        if counted[version] != 1:
            problems.append(f"{version} scored {counted[version]} times")
    return problems


def checks(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The safety guarantees of one session's record: each check's problems (none: kept)."""
    history = [CycleMetrics.model_validate(h) for h in record["history"]]
    decisions = [Decision.model_validate(d) for d in record["decisions"]]
    scores = [TestScores.model_validate(s) for s in record["test_scores"]]
    test = record["test"]
    versions = [test["initial"]["version"], test["final"]["version"]]
    return {
        "floor": below_floor(history, decisions, record["accuracy_floor"]),
        "guard": past_guard(decisions, record["regression_tolerance"]),
        "test_once": scoring_problems(scores, record["finalize_runs"], versions),
    }


# -- a session ------------------------------------------------------------------------------


def run_arm(arm: str, policy: SessionPolicy, root: Path) -> Record:
    """One session of `policy` under `root`, recorded."""
    from cli.common import Loaders
    from graph.session import Session, new_session_id
    from tasks import with_verifier

    loaders = Loaders()
    path = Path(policy.task_path) if policy.task_path else None
    task = with_verifier(loaders.load_task(policy.task, path), policy.task_verifier)
    engine = loaders.engine(policy.model, policy.engine, policy.cluster)
    root.mkdir(parents=True, exist_ok=True)
    with open_store(f"sqlite:///{root}/autodidact.db", root, restorable=RECORD_TYPES) as store:
        session = Session(new_session_id(f"{policy.task}-{arm}"), policy, store, task, engine)
        started = time.perf_counter()
        state = session.run(on_event=print_event(arm, started))
        seconds = time.perf_counter() - started
        events = store.events.read(session.session_id)
    return session_record(state, events) | {
        "session_id": session.session_id,
        "folder": str(session.folder),
        "wall_seconds": round(seconds, 1),
        "planners": {stage: getattr(policy.planner, stage) for stage in STAGES},
        "accuracy_floor": policy.monitor.accuracy_floor,
        "regression_tolerance": policy.monitor.regression_tolerance,
    }


def session_record(state: Mapping[str, Any], events: Sequence[Event]) -> Record:
    """What the report reads of a finished session: its plans, decisions and dev history
    (the state's), its test scores and finalize runs (the event log's), the closing report's
    test numbers."""
    final = state["final"]
    dump = lambda record: record.model_dump(mode="json")  # noqa: E731
    keep = ("version", "test_accuracy", "n_test")
    return {
        "plans": [dump(p) for p in state.get("plans", [])],
        "decisions": [dump(d) for d in state.get("decisions", [])],
        "history": [dump(h) for h in state.get("history", [])],
        "test_scores": [dump(s) for s in records_of(TestScores, events)],
        "finalize_runs": sum(e.kind == "node_start" and e.node == "finalize" for e in events),
        "node_seconds": {n: round(t, 1) for n, t in stage_seconds(events).items()},
        "cycles": max((h["cycle"] for h in final["cycles"]), default=0),
        "test": {role: {k: final[role][k] for k in keep} for role in ("initial", "final")},
        "stop_reason": final["stop_reason"],
    }


def print_event(arm: str, started: float) -> Any:
    def show(event: Event) -> None:
        if event.kind in ("decision", "error") or event.data_type in ("plan", "test_scores"):
            print(
                f"  [{arm} {time.perf_counter() - started:6.0f} s] c{event.cycle} {event.node}: "
                f"{event.message[:200]}",
                flush=True,
            )

    return show


# -- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(model: str, log: Path, timeout: float) -> Iterator[tuple[str, str]]:
    """`autodidact serve --model MODEL --refine none` as a subprocess of this checkout on a
    free loopback port, up once `/health` answers; yields its `/v1` URL and the model id
    `/v1/models` lists. Stopped on the way out, whatever happened."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "cli", "serve", "--model", model, "--refine", "none"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != SERVER_API_KEY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(url, process, timeout, log)
            yield f"{url}/v1", served_model(url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"autodidact serve exited with status {process.returncode} before answering "
                f"/health; its log ({log}) ends:\n{tail(log)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
                if json.load(reply).get("status") == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"autodidact serve gave no /health at {url} within {timeout:.0f} s "
                f"(--serve-timeout); its log ({log}) ends:\n{tail(log)}"
            )
        time.sleep(0.5)


def served_model(url: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as reply:
        return str(json.load(reply)["data"][0]["id"])


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """These environment variables set for the block, restored after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- printing -------------------------------------------------------------------------------


def cell(n: int, total: int) -> str:
    """A count and its share: '3 (37.5%)'; '0' when none.

    >>> cell(3, 8), cell(0, 8)
    ('3 (37.5%)', '0')
    """
    return f"{n} ({n / total:.1%})" if n and total else str(n)


def report_lines(records: Sequence[Record]) -> list[str]:
    """The tables of every (preset, seed) the records hold, rules beside http."""
    lines: list[str] = []
    for (preset, seed), arms in grouped(records).items():
        lines += outcome_table(preset, seed, arms) + result_table(arms)
        lines += node_table(arms) + notes(arms)
    return lines or ["no session finished yet"]


def grouped(records: Sequence[Record]) -> dict[tuple[str, int], dict[str, Record]]:
    out: dict[tuple[str, int], dict[str, Record]] = {}
    for r in PLANNERS.order(records):
        out.setdefault((r["preset"], r["seed"]), {})[r["arm"]] = r
    return out


def plans_of(record: Record) -> list[PlannedChoice]:
    return [PlannedChoice.model_validate(p) for p in record["plans"]]


def outcome_table(preset: str, seed: int, arms: Mapping[str, Record]) -> list[str]:
    served = arms.get("http", {}).get("served_model")
    cycles = next(iter(arms.values()))["max_cycles"]
    lines = [
        f"\n### Planners' proposals: preset {preset}, seed {seed}, monitor.max_cycles={cycles}"
        + (f"; http = {served} served with --refine none" if served else "")
        + "\n",
        "| arm | stage | choices | "
        + " | ".join(OUTCOME_NAMES[o] for o in OUTCOMES)
        + " | = rules session |",
        "|---|---|---|" + "---|" * len(OUTCOMES) + "---|",
    ]
    rules_plans = plans_of(arms["rules"]) if "rules" in arms else []
    for arm, record in arms.items():
        plans = plans_of(record)
        same = same_as_rules(plans, rules_plans) if arm != "rules" else {}
        for stage, counts in outcome_counts(plans).items():
            total = sum(counts.values())
            agree = f"{same[stage][0]} of {same[stage][1]}" if stage in same else "-"
            row = [arm, stage, str(total), *(cell(counts[o], total) for o in OUTCOMES), agree]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def result_table(arms: Mapping[str, Record]) -> list[str]:
    lines = [
        "\n| arm | cycles | wall | test n | test initial | test final | gain | promoted | "
        "below floor | past regression guard | test scored once per model |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    found_by_arm = {arm: checks(r) for arm, r in arms.items()}
    for arm, r in arms.items():
        initial, final = r["test"]["initial"], r["test"]["final"]
        gain = final["test_accuracy"] - initial["test_accuracy"]
        promoted = promotions(Decision.model_validate(d) for d in r["decisions"])
        found = found_by_arm[arm]
        floor = f"floor {r['accuracy_floor']:g} x v0"
        said = lambda problems: "; ".join(problems) if problems else "none"  # noqa: E731
        row = [
            arm,
            str(r["cycles"]),
            f"{r['wall_seconds'] / 60:.1f} min",
            str(initial["n_test"]),
            f"{initial['test_accuracy']:.1%} ({initial['version']})",
            f"{final['test_accuracy']:.1%} ({final['version']})",
            f"{gain * 100:+.1f} pts",
            ", ".join(v for _, v in promoted) or "none",
            f"{said(found['floor'])} ({floor})",
            said(found["guard"]),
            "yes" if not found["test_once"] else "NO: " + said(found["test_once"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    kept = not any(any(found.values()) for found in found_by_arm.values())
    lines.append(f"\nsafety guarantees: {'kept' if kept else 'BROKEN'} in every session")
    return lines


def node_table(arms: Mapping[str, Record]) -> list[str]:
    """Wall seconds per graph node, summed over its runs: what the planners' choices (and
    their calls, inside acquire, select, optimize and monitor) cost."""
    names = list(arms)
    seconds = {arm: r.get("node_seconds", {}) for arm, r in arms.items()}
    lines = [
        "\n| node | " + " | ".join(f"{arm} s" for arm in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for node in [n for n in NODES if any(n in s for s in seconds.values())]:
        lines.append(
            f"| {node} | " + " | ".join(f"{seconds[a].get(node, 0.0):.1f}" for a in names) + " |"
        )
    lines.append(
        "| session | " + " | ".join(f"{arms[a]['wall_seconds']:.1f}" for a in names) + " |"
    )
    return lines


def notes(arms: Mapping[str, Record]) -> list[str]:
    lines = []
    for arm, r in arms.items():
        reasons = fallback_reasons(plans_of(r))
        if reasons:
            lines.append(f"\n{arm}: fallbacks")
            lines += [f"  {n} x {why}" for why, n in reasons.most_common()]
        lines.append(f"\n{arm}: decisions (stop: {r['stop_reason']})")
        for d in r["decisions"]:
            lines.append(f"  c{d['cycle']} {d['action']} ({d['source']}): {d['reason'][:160]}")
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", help="both sessions' preset")
    parser.add_argument("--seed", type=int, default=0, help="both sessions' seed")
    parser.add_argument("--cycles", type=int, default=2, help="most cycles per session")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model served to the planners")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-planners"))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench-planners.json"),
        help="results file; each session is merged into it by (preset, seed, arm) as it "
        "ends, and one it already holds with the same settings is skipped",
    )
    parser.add_argument("--serve-timeout", type=float, default=600.0, help="seconds to /health")
    parser.add_argument("--report", type=Path, help="print the tables of a saved --out file")
    args = parser.parse_args(argv)
    if args.report:
        try:
            records = read_runs(args.report, PLANNERS)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        print("\n".join(report_lines(records)))
        return
    common = [*FIXED, f"monitor.max_cycles={args.cycles}", f"seed={args.seed}", *args.sets]
    plan = [
        ((args.preset, args.seed, arm), [*common, *([f"served={args.model}"] * (arm == "http"))])
        for arm in ARMS
    ]
    for (preset, seed, arm), sets in still_to_run(plan, args.out, PLANNERS):
        root = args.root / f"seed-{seed}" / arm
        print(f"[{arm}] session", flush=True)
        extra: Record = {}
        if arm == "rules":
            record = run_arm(arm, resolve_policy(preset, None, common), root)
        else:
            with served(args.model, root / "serve.log", args.serve_timeout) as (url, name):
                print(f"[{arm}] serving {name!r} at {url}", flush=True)
                planners = [f"planner.{stage}=openai:{name}" for stage in STAGES]
                policy = resolve_policy(preset, None, [*common, *planners])
                with environment(OPENAI_BASE_URL=url, OPENAI_API_KEY="unused"):
                    record = run_arm(arm, policy, root)
            extra = {"served_model": name}
        meta = {"preset": preset, "seed": seed, "arm": arm, "sets": sets}
        save_run(args.out, meta | extra | {"max_cycles": args.cycles} | record, PLANNERS)
        print(f"[{arm}] done; results in {args.out}", flush=True)
    print("\n".join(report_lines(read_runs(args.out, PLANNERS))))


if __name__ == "__main__":
    main()
