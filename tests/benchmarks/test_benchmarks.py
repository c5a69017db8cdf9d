"""The benchmarks' pure parts (no model): how the engine benchmark interleaves and labels
its ratios, how the probe benchmark's in-generation cost is computed, and that the
tracking benchmark counts mlflow's import when its own process paid it untimed, the storage
benchmark's node count read off the session graph, and the fault-sweep figure."""

from __future__ import annotations

import pytest

from benchmarks.engine import interleaved_medians, overhead, time_ratio
from benchmarks.probe_sweeps import Timing
from benchmarks.storage import cycle_nodes, session_nodes
from benchmarks.tracking import with_import
from scripts.fault_sweep_figure import figure

# -- engine ---------------------------------------------------------------------------------


def test_interleaved_medians_alternate_the_order_and_take_each_sides_median() -> None:
    calls: list[str] = []
    seconds = {"a": iter([0.0, 0.0, 0.0]), "b": iter([0.0, 0.0, 0.0])}

    def side(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            calls.append(name)
            next(seconds[name])

        return run

    medians = interleaved_medians([side("a"), side("b")], repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert len(medians) == 2


def test_interleaved_medians_are_medians_of_the_same_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0, 1, 1, 3, 3, 13, 13, 14, 14, 15, 15, 17])  # a: 1, 1, 1; b: 2, 10, 2
    monkeypatch.setattr("benchmarks.engine.time.perf_counter", lambda: next(clock))
    a, b = interleaved_medians([lambda: None, lambda: None], repeats=3)
    assert (a, b) == (1, 2)  # the 10 s outlier of one round does not move b's median


def test_a_time_ratio_names_both_sides_and_which_is_faster() -> None:
    assert time_ratio("generate", 6.91, "decoder", 5.47).endswith("= 1.26x (decoder faster)")
    assert time_ratio("generate", 5.47, "decoder", 6.91).endswith("= 0.79x (decoder slower)")
    assert time_ratio("loop", 36.4, "batched", 6.78).startswith("loop 36.40 s / batched 6.78 s")


def test_overhead_is_with_over_without() -> None:
    assert overhead(5.69, 5.47) == "with 5.69 s vs without 5.47 s = +4.0%"
    assert overhead(5.40, 5.47).endswith("= -1.3%")


# -- the probe benchmark's cost inside generation --------------------------------------------


def test_the_probes_in_generation_cost_is_the_measured_generation_difference() -> None:
    timing = Timing(
        prompts=32,
        sc_prompts=8,
        repeats=3,
        greedy=0.171,
        greedy_probe=0.178,
        prefill=0.054,
        self_consistency=1.04,
        probe_range=(0.01, 0.09),
    )
    assert timing.in_generation == pytest.approx(0.007)
    assert timing.in_generation_share == pytest.approx(0.178 / 0.171 - 1)


# -- tracking ---------------------------------------------------------------------------------


def test_an_import_paid_outside_the_timer_is_added_to_opening_and_wall() -> None:
    measured = {"wall": 9.6, "open": 0.2, "consumer": 3.7, "close": 1.3}
    counted = with_import(measured, 46.0)
    assert counted["open"] == pytest.approx(46.2)
    assert counted["wall"] == pytest.approx(55.6)
    assert (counted["consumer"], counted["close"]) == (3.7, 1.3)


# -- storage: the projected session's nodes, counted on the graph -------------------------


def session_graph_edges() -> list[tuple[str, str]]:
    from graph.build import wire
    from graph.nodes import Nodes

    nodes = Nodes.__new__(Nodes)  # wiring reads only the bound methods' names and types
    return [(e.source, e.target) for e in wire(nodes).compile().get_graph().edges]


def test_a_cycle_is_the_six_nodes_from_acquire_to_monitor() -> None:
    assert cycle_nodes(session_graph_edges()) == {
        "acquire",
        "select",
        "refit_probe_on_samples",
        "optimize",
        "evaluate",
        "monitor",
    }


def test_a_four_cycle_session_runs_each_cycle_node_four_times_the_rest_once() -> None:
    assert session_nodes(session_graph_edges(), cycles=4) == 3 + 4 * 6


# -- the fault-sweep figure: every attempt counts ---------------------------------------------


def attempt(backend: str, kill: str, identical: bool, point: str | None = None) -> dict:
    return {
        "backend": backend,
        "kill": kill,
        "point": point or kill,
        "where": "in probe",
        "identical": identical,
    }


def test_a_kill_point_that_failed_once_of_three_shows_as_flaky() -> None:
    lines = [
        attempt("sqlite", "node.probe:1", True),
        attempt("sqlite", "node.probe:1", False),
        attempt("sqlite", "node.probe:1", True),  # the latest attempt passed
        attempt("sqlite", "event.append:3", True),
    ]
    text = figure(lines)
    assert "| SQLite | 4 | 3 | 1 |" in text
    assert "| `node.probe:1` | in probe | **flaky**: 2 of 3 identical |" in text
    assert "| `event.append:3` | in probe | yes |" in text


def test_random_moments_name_every_point_they_fell_on() -> None:
    lines = [
        attempt("redis", "random:0", True, point="checkpoint.put:7"),
        attempt("redis", "random:0", True, point="checkpoint.put:7"),
    ]
    assert "yes (2 of 2): `checkpoint.put:7` (in probe)" in figure(lines)
