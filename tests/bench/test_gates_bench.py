"""`make bench-gates` itself: the bar's bookkeeping and one small run end to end (its figures are the
benchmark's, not this test's)."""

import json
import math

import numpy as np

from bench import gates as B


def cell(case, passes, fails, windows=100):
    return B.Cell("g", case, {"window_min": 1}, windows, passes, windows - passes - fails, fails)


def test_the_bar_bounds_harmful_passes_and_healthy_fails_in_the_worst_cell():
    rows = B.bar_rows(
        [cell("harm x", 4, 90), cell("harm x", 6, 0), cell("healthy y", 90, 1), cell("healthy y", 0, 0)]
    )
    harm, healthy = rows
    assert (harm["what"], harm["worst_rate"], harm["cells_over"], harm["met"]) == ("pass", 0.06, 1, False)
    assert harm["cells_significantly_over"] == 0  # 6 of 100: its interval still reaches 5%
    assert (healthy["what"], healthy["worst_rate"], healthy["met"]) == ("fail", 0.01, True)


def test_a_single_look_time_is_where_half_the_runs_pass():
    at = np.array([10.0, 20.0, 30.0])
    assert B._crossing(at, [0.0, 0.4, 0.8], 0.5) == 22.5
    assert B._crossing(at, [0.6, 0.9, 1.0], 0.5) == 10.0
    assert B._crossing(at, [0.0, 0.1, 0.2], 0.5) == math.inf


def test_a_small_run_writes_the_report(tmp_path):
    code = B.main(["--only", "counts", "--windows", "20", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "bench-gates.json").read_text())
    gates = {row["gate"] for row in result["bar"]}
    assert gates == {"error_rate", "throughput"} and code in (0, 1)
    assert code == (0 if all(row["met"] for row in result["bar"]) else 1)
    assert "## The bar, per gate and case" in (tmp_path / "bench-gates.md").read_text()


def test_a_gates_cases_are_pooled_per_window_length():
    def at(window, case, passes, fails):
        return B.Cell(
            "memory_leak",
            case,
            {"window_min": window, "period_min": 1},
            100,
            passes,
            100 - passes - fails,
            fails,
        )

    cells = [
        at(10, "healthy", 50, 0),
        at(10, "healthy", 30, 2),
        at(10, "harm", 0, 10),
        at(25, "healthy", 90, 0),
    ]
    cells += [at(25, "harm", 1, 60), B.Cell("other", "healthy", {"window_min": 10}, 100, 0, 0, 100)]
    lines = B._pooled_by_window(cells, "memory_leak")
    assert "| window min | healthy | harm |" in lines
    assert "| 10 | 40.0% / 59.0% / 1.0% | 0.0% / 90.0% / 10.0% |" in lines
    assert "| 25 | 90.0% / 10.0% / 0.0% | 1.0% / 39.0% / 60.0% |" in lines
    assert B._pooled_by_window(cells, "latency") == []
