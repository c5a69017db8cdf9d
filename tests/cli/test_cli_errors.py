"""Bad input to `run` and `policy validate` is one line and exit code 2, before any model
loads (unit tier: the app in this process, a model loader that must not be called)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest
from typer.testing import CliRunner, Result

from cli.app import make_app
from cli.common import Loaders
from tasks.base import split_of


def no_model(_model: str) -> NoReturn:
    raise AssertionError("the model must not load")


def autodidact(*args: str) -> Result:
    return CliRunner().invoke(make_app(Loaders(load_engine=no_model)), list(args))


def assert_one_line_exit_2(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--set", "monitor.max_cycle=2"], "did you mean 'monitor.max_cycles'"),
        (["--task", "jsonl"], "needs a file"),
    ],
)
def test_bad_run_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    assert_one_line_exit_2(autodidact("run", *args, "--root", str(tmp_path)), message)


def test_invalid_policy_file_is_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("monitor:\n  max_cycles: -1\n")
    assert_one_line_exit_2(autodidact("policy", "validate", str(policy)), "monitor.max_cycles")


def test_task_with_no_train_items_is_exit_2(tmp_path: Path) -> None:
    rows = tmp_path / "one.jsonl"
    # one group only: with seed 0 it lands in a single split; make sure it is not train
    group = next(g for g in (f"g{i}" for i in range(100)) if split_of(g, 0) != "train")
    rows.write_text(json.dumps({"question": "2+2?", "answer": "4", "group": group}) + "\n")
    result = autodidact("run", "--task", "jsonl", "--path", str(rows), "--root", str(tmp_path))
    assert_one_line_exit_2(result, "no train items")


# -- inputs refused before any work: one line on stderr, exit 2, nothing written ----------


def jsonl_rows(folder: Path, n: int) -> Path:
    rows = folder / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"question": f"{i}+0?", "answer": str(i)}) + "\n" for i in range(n))
    )
    return rows


def policy_file(folder: Path, text: str) -> Path:
    path = folder / "policy.yaml"
    path.write_text(text)
    return path


def existing_store(folder: Path) -> Path:
    from storage import open_store

    root = folder / "elsewhere"
    with open_store(f"sqlite:///{root}/autodidact.db", root):
        pass
    return root


class Labelled:
    """What `collect` returns, as far as the CLI reads it after labelling."""

    def __init__(self, wrong: list[int]) -> None:
        from probes.labels import Label

        self.labels = [Label(f"i{i}", w, "stop") for i, w in enumerate(wrong)]


def stand_in_engine(_model: str) -> Any:
    """An engine that is never asked to generate (the stand-ins answer for it)."""
    return SimpleNamespace(name="stand-in", fingerprint="stand-in")


def one_class_sweep(*_args: object, **_kwargs: object) -> NoReturn:
    from probes.sweep import SweepRefusedError

    raise SweepRefusedError("the validation split has 0 labelled items of one class only")


@pytest.fixture()
def probe_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """`probe sweep`/`eval` past their model: labels of one class, a one-item test split."""
    import probes.artifact
    import probes.data
    import probes.evaluation
    import probes.sweep

    monkeypatch.setattr(probes.data, "collect", lambda *a, **k: Labelled([1, 1, 1]))
    monkeypatch.setattr(probes.sweep, "sweep", one_class_sweep)
    monkeypatch.setattr(probes.evaluation, "held_out_items", lambda task, probe: task.items[:1])
    fitted = SimpleNamespace(card=SimpleNamespace(max_new_tokens=8, fingerprint="stand-in"))
    monkeypatch.setattr(probes.artifact, "load_probe", lambda *a, **k: fitted)


# (case, argv built in the tmp folder, what the line says, True when nothing may be written)
REFUSED = [
    ("1 tiny dev/test split", lambda d: ["run", "-t", "jsonl", "--path", str(jsonl_rows(d, 20))],
     "need dev >= 10 and test >= 10", True),
    ("2 sweep limit", lambda d: ["probe", "sweep", "-t", "jsonl", "--path",
     str(jsonl_rows(d, 30)), "--limit", "6"], "raise --limit", True),
    ("2 sweep one class", lambda d: ["probe", "sweep", "-t", "jsonl", "--path",
     str(jsonl_rows(d, 60))], "labels: 3 labels, 3 wrong", True),
    ("3 task name", lambda d: ["policy", "validate", str(policy_file(d, "task: capitls\n"))],
     "did you mean 'capitals'", True),
    ("4 folder as policy", lambda d: ["policy", "validate", str(d)], "is a folder", True),
    ("4 folder to run", lambda d: ["run", "--policy", str(d)], "is a folder", True),
    ("5 temperature", lambda d: ["generate", "hi", "--temperature", "-1"], "--temperature", True),
    ("5 top_p 0", lambda d: ["generate", "hi", "--top-p", "0"], "--top-p must be in (0, 1]", True),
    ("5 top_p 1.5", lambda d: ["generate", "hi", "--top-p", "1.5"], "--top-p", True),
    ("6 eval one item", lambda d: ["probe", "eval", str(d), "-t", "jsonl", "--path",
     str(jsonl_rows(d, 12)), "--k", "0"], "a ROC needs >= 2 of each", True),
    ("7 run --seed", lambda d: ["run", "--seed", "-1"], "seed must be >= 0", True),
    ("8 trace hint", lambda d: ["trace", "nope", "--root", str(existing_store(d))],
     "sessions --root", False),
    ("9 sessions, no store", lambda d: ["sessions"], "no store at runs/autodidact.db", True),
    ("9 trace, no store", lambda d: ["trace", "x", "--root", "r"], "no store at r/", True),
    ("9 run, unknown task", lambda d: ["run", "-t", "capitls"], "did you mean 'capitals'", True),
]  # fmt: skip


@pytest.mark.usefixtures("probe_stand_ins")
@pytest.mark.parametrize(
    ("case", "argv", "message", "read_only"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_refused_before_any_work(
    case: str,
    argv: Callable[[Path], list[str]],
    message: str,
    read_only: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each bad input: exit 2, one line on stderr and nothing on stdout, no traceback; the
    model is never needed, and (read-only or refused) nothing is created."""
    monkeypatch.chdir(tmp_path)
    assert_refused(Loaders(load_engine=stand_in_engine), argv, message, read_only, tmp_path)


def assert_refused(
    loaders: Loaders,
    argv: Callable[[Path], list[str]],
    message: str,
    read_only: bool,
    folder: Path,
) -> None:
    """Run `argv(folder)`: exit 2, one line holding `message` on stderr and nothing on
    stdout, no traceback; with `read_only`, nothing created under `folder`."""
    args = argv(folder)
    before = sorted(folder.rglob("*"))
    result = CliRunner().invoke(make_app(loaders), args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not result.stdout.strip(), result.stdout
    if read_only:
        assert sorted(folder.rglob("*")) == before


def latin1_file(folder: Path, name: str, text: str) -> Path:
    """`text` saved as Latin-1 (as a spreadsheet export can be): its é is not UTF-8."""
    path = folder / name
    path.write_bytes(text.encode("latin-1"))
    return path


def latin1_rows(folder: Path) -> Path:
    return latin1_file(folder, "rows.jsonl", '{"question": "café?", "answer": "oui"}\n')


def latin1_policy(folder: Path) -> Path:
    return latin1_file(folder, "policy.yaml", "# café\nseed: 1\n")


def saved_policy(folder: Path, text: str) -> Path:
    """A root whose session `s` saved `text` as its policy.json (the root is returned)."""
    session = folder / "sessions" / "s"
    session.mkdir(parents=True)
    (session / "policy.json").write_text(text)
    return folder


def broken_probe(folder: Path) -> Path:
    """A probe folder whose card is not JSON."""
    from probes.artifact import CARD_FILE, WEIGHTS_FILE

    probe = folder / "probe"
    probe.mkdir()
    (probe / CARD_FILE).write_text("{")
    (probe / WEIGHTS_FILE).write_bytes(b"")
    return probe


# (case, argv built in the tmp folder, what the line says, True when nothing may be written):
# each is refused before the model loads (the loader fails the test if it is called)
REFUSED_WITHOUT_MODEL = [
    ("run on images", lambda d: ["run", "-t", "shapes"], "asks about images", True),
    ("eval on images", lambda d: ["eval", "-t", "shapes", "--refine", "none"],
     "asks about images", True),
    ("probe sweep on images", lambda d: ["probe", "sweep", "-t", "shapes"],
     "asks about images", True),
    ("latin-1 jsonl, tasks show", lambda d: ["tasks", "show", "jsonl", "--path",
     str(latin1_rows(d))], "rows.jsonl is not UTF-8", True),
    ("latin-1 jsonl, run", lambda d: ["run", "-t", "jsonl", "--path", str(latin1_rows(d))],
     "rows.jsonl is not UTF-8", True),
    ("latin-1 policy, validate", lambda d: ["policy", "validate", str(latin1_policy(d))],
     "policy.yaml is not UTF-8", True),
    ("latin-1 policy, run", lambda d: ["run", "--policy", str(latin1_policy(d))],
     "policy.yaml is not UTF-8", True),
    ("answer --k 0", lambda d: ["answer", "hi", "--k", "0"], "Invalid value for '--k'", True),
    ("answer --k x", lambda d: ["answer", "hi", "--k", "x"], "Invalid value for '--k'", True),
    ("answer --max-new-tokens 0", lambda d: ["answer", "hi", "--max-new-tokens", "0"],
     "Invalid value for '--max-new-tokens'", True),
    ("eval --max-new-tokens -1", lambda d: ["eval", "--max-new-tokens", "-1"],
     "Invalid value for '--max-new-tokens'", True),
    ("probe sweep --max-new-tokens 0", lambda d: ["probe", "sweep", "--max-new-tokens", "0"],
     "Invalid value for '--max-new-tokens'", True),
    ("resume, truncated policy.json", lambda d: ["resume", "s", "--root",
     str(saved_policy(d, '{"task": "arithmetic", "mon'))], "policy.json line 1: not valid JSON",
     True),
    ("resume, edited policy.json", lambda d: ["resume", "s", "--root",
     str(saved_policy(d, '{"monitor": {"max_cycles": -1}}'))],
     "policy.json: monitor.max_cycles must be >= 1", True),
    ("probe eval, no probe", lambda d: ["probe", "eval", str(d / "nope"), "-t", "arithmetic"],
     "nope: not a probe", True),
    ("probe eval, broken probe", lambda d: ["probe", "eval", str(broken_probe(d))],
     "card.json: not JSON", True),
    ("probe score, no probe", lambda d: ["probe", "score", str(d / "nope"), "2+2?"],
     "nope: not a probe", True),
    ("answer --probe, no probe", lambda d: ["answer", "hi", "--probe", str(d / "nope")],
     "nope: not a probe", True),
    ("eval --probe, no probe", lambda d: ["eval", "--probe", str(d / "nope"), "--limit", "2"],
     "nope: not a probe", True),
    ("eval --refine abstain, no probe", lambda d: ["eval", "--refine", "abstain"],
     "--refine abstain routes on the probe's risk: pass --probe DIR", True),
    ("eval --refine nope", lambda d: ["eval", "--refine", "nope"], "--refine must be one of",
     True),
    ("eval --low above --high", lambda d: ["eval", "--low", "0.8", "--high", "0.2"],
     "need 0 <= --low <= --high <= 1", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "argv", "message", "read_only"),
    REFUSED_WITHOUT_MODEL,
    ids=[c[0] for c in REFUSED_WITHOUT_MODEL],
)
def test_refused_before_the_model_loads(
    case: str,
    argv: Callable[[Path], list[str]],
    message: str,
    read_only: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_refused(Loaders(load_engine=no_model), argv, message, read_only, tmp_path)


def stale_probe(folder: Path) -> Path:
    """A real probe folder, made for another model than `stand_in_engine`."""
    from probes.fit import EstimatorConfig, export_weights, fit_estimator
    from tests.probe_fakes import make_probe, toy_rows

    x, y = toy_rows()
    weights = export_weights(fit_estimator(x, y, EstimatorConfig()))
    return make_probe(weights, fingerprint="other-model").save(folder / "probe")


STALE = [
    ("probe eval", lambda d: ["probe", "eval", str(stale_probe(d)), "-t", "capitals"]),
    ("probe score", lambda d: ["probe", "score", str(stale_probe(d)), "2+2?"]),
    ("answer --probe", lambda d: ["answer", "hi", "--probe", str(stale_probe(d))]),
    ("eval --probe", lambda d: ["eval", "--probe", str(stale_probe(d)), "--limit", "2"]),
]


@pytest.mark.parametrize(("case", "argv"), STALE, ids=[c[0] for c in STALE])
def test_a_probe_of_another_model_is_refused(
    case: str, argv: Callable[[Path], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read before the model loads, the probe is still checked against it once loaded."""
    monkeypatch.chdir(tmp_path)
    loaders = Loaders(load_engine=stand_in_engine)
    assert_refused(loaders, argv, "was made for model fingerprint other-model", True, tmp_path)


@pytest.mark.usefixtures("probe_stand_ins")
def test_a_bug_in_the_sweep_is_not_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the sweep's deliberate refusals are one line; any other error keeps its type
    and traceback."""
    import probes.sweep

    def buggy_sweep(*_args: object, **_kwargs: object) -> NoReturn:
        raise ValueError("a bug")

    monkeypatch.setattr(probes.sweep, "sweep", buggy_sweep)
    monkeypatch.chdir(tmp_path)
    args = ["probe", "sweep", "-t", "jsonl", "--path", str(jsonl_rows(tmp_path, 60))]
    result = CliRunner().invoke(make_app(Loaders(load_engine=stand_in_engine)), args)
    assert isinstance(result.exception, ValueError) and str(result.exception) == "a bug"


def test_repeated_jsonl_id_is_reported_and_the_first_kept(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    lines = [{"question": "2+2?", "answer": "4", "id": "a"},
             {"question": "3+3?", "answer": "6", "id": "a"}]  # fmt: skip
    rows.write_text("".join(json.dumps(row) + "\n" for row in lines))
    result = autodidact("tasks", "show", "jsonl", "--path", str(rows))
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # the console wraps long lines
    assert f"skipped {rows}:line 2: id 'a' repeats line 1's (the first is kept)" in words
    assert "2+2?" in result.output and "3+3?" not in result.output


def test_empty_sessions_table_says_where_to_look(tmp_path: Path) -> None:
    root = existing_store(tmp_path)
    result = CliRunner().invoke(make_app(), ["sessions", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "--root/--store must match the run's" in result.stdout


def test_gated_eval_reports_every_rate_with_its_interval(tmp_path: Path) -> None:
    """`eval --probe --refine abstain` on the tiny model: each answer carries the probe's
    risk, the ones above --high are abstentions, and the rates add up."""
    import numpy as np

    from probes.fit import EstimatorConfig, export_weights, fit_estimator
    from tests.probe_fakes import make_probe
    from tests.tiny_models import tiny_engine

    engine = tiny_engine()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16)).astype(np.float32)  # the tiny model's hidden size
    weights = export_weights(fit_estimator(x, rng.integers(0, 2, 60), EstimatorConfig()))
    probe = make_probe(weights, layers=(1,), fingerprint=engine.fingerprint)
    folder = probe.save(tmp_path / "probe")
    argv = ["eval", "--task", "arithmetic", "--limit", "12", "--max-new-tokens", "4"]
    argv += ["--probe", str(folder), "--refine", "abstain", "--high", "0.5"]
    result = CliRunner().invoke(
        make_app(Loaders(load_engine=lambda _model: engine)), [*argv, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    (summary_file,) = tmp_path.glob("eval-*/summary.json")
    summary = json.loads(summary_file.read_text())
    rates = {name: rate for name, rate in summary["rates"].items()}
    answers = [json.loads(line) for line in summary_file.with_name("answers.jsonl").open()]
    assert len(answers) == 12 and all(a["risk"] is not None for a in answers)
    abstained = sum(a["abstained"] for a in answers)
    assert rates["abstention_rate"]["count"] == abstained
    assert abstained == sum(a["risk"] > 0.5 for a in answers), "abstain: above --high"
    assert rates["coverage"]["count"] + abstained == 12
    answered = rates["coverage"]["count"]
    assert rates["accuracy"]["count"] + rates["hallucination_rate"]["count"] == answered
    assert rates["answered_precision"]["n"] == answered
    for rate in rates.values():
        if rate["value"] is not None:
            assert rate["low"] <= rate["value"] <= rate["high"]
    assert "coverage" in result.output and "answered precision" in result.output
