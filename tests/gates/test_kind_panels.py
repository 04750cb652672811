"""Each kind's report panel: the series it judges, per arm, rendered from the gate's own queries.

The expected PromQL of the CPU and end-to-end latency gates is written out by hand for both query
profiles; the other kinds are checked against their own queries as the packaged defaults render them.
"""

from __future__ import annotations

import dataclasses

import pytest

from gates.config import load_gate_file
from gates.kinds import KINDS
from gates.kinds.base import Bound, Panel
from gates.spec import ARMS, GateConfig, GateSpec, render

WINDOW_S = 60.0


def config(profile: str) -> GateConfig:
    return load_gate_file(None, profile)


def panel_of(config: GateConfig, name: str, window_s: float = WINDOW_S) -> Panel:
    gate = next(g for g in config.gates if g.name == name)
    (panel,) = KINDS[gate.kind].panel(gate, config.merged_variables(None), window_s)
    return panel


def own_query(config: GateConfig, name: str, role: str, arm: str, window_s: float = WINDOW_S) -> str:
    gate = next(g for g in config.gates if g.name == name)
    return render(gate.queries[role], config.merged_variables(None), arm=arm, window_s=window_s)


def test_every_packaged_gate_draws_one_panel_with_a_query_per_arm_in_both_profiles():
    for profile in ("local", "kubernetes"):
        c = config(profile)
        assert len(c.gates) == 7
        for gate in c.gates:
            panels = KINDS[gate.kind].panel(gate, c.merged_variables(None), WINDOW_S)
            assert len(panels) == 1, gate.name
            (panel,) = panels
            assert panel.title.startswith(gate.name) and set(panel.queries) == set(ARMS)
            assert "${" not in "".join(panel.queries.values())
            assert panel.queries["baseline"] != panel.queries["canary"]


def test_cpu_panel_is_the_gates_value_query_in_percent_under_its_max():
    local = panel_of(config("local"), "cpu_utilisation")
    assert local.queries == {
        "baseline": 'sum(rate(backend_process_cpu_seconds_total{arm="baseline"}[60s])) '
        '/ max(backend_cpu_allotted_cores{arm="baseline"})',
        "canary": 'sum(rate(backend_process_cpu_seconds_total{arm="canary"}[60s])) '
        '/ max(backend_cpu_allotted_cores{arm="canary"})',
    }
    assert (local.unit, local.scale, local.bounds) == ("%", 100.0, (Bound("max", 0.6, ("canary",)),))
    assert local.title == "cpu_utilisation: CPU used over CPU available"
    cluster = panel_of(config("kubernetes"), "cpu_utilisation")
    assert cluster.queries == {
        "baseline": 'sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"sglang-baseline-.*",'
        'container!="",container!="POD"}[60s])) / sum(kube_pod_container_resource_limits{namespace="default",'
        'pod=~"sglang-baseline-.*",resource="cpu",container!=""})',
        "canary": 'sum(rate(container_cpu_usage_seconds_total{namespace="default",pod=~"sglang-canary-.*",'
        'container!="",container!="POD"}[60s])) / sum(kube_pod_container_resource_limits{namespace="default",'
        'pod=~"sglang-canary-.*",resource="cpu",container!=""})',
    }
    assert cluster.bounds == (Bound("max", 0.6, ("canary",)),)


def test_latency_panel_is_the_quantile_of_the_gates_buckets_in_ms_under_its_absolute_bound():
    local = panel_of(config("local"), "latency_e2e_p99")
    assert local.queries == {
        "baseline": "histogram_quantile(0.99, sum by (le) "
        '(increase(sglang:e2e_request_latency_seconds_bucket{arm="baseline"}[60s])))',
        "canary": "histogram_quantile(0.99, sum by (le) "
        '(increase(sglang:e2e_request_latency_seconds_bucket{arm="canary"}[60s])))',
    }
    assert (local.unit, local.scale, local.bounds) == ("ms", 1000.0, (Bound("max", 0.6, ("canary",)),))
    assert local.title == "latency_e2e_p99 (P99): end-to-end request latency"
    cluster = panel_of(config("kubernetes"), "latency_e2e_p99")
    assert cluster.queries == {
        "baseline": "histogram_quantile(0.99, sum by (le) (increase(sglang:e2e_request_latency_seconds_bucket"
        '{namespace="default",pod=~"sglang-baseline-.*"}[60s])))',
        "canary": "histogram_quantile(0.99, sum by (le) (increase(sglang:e2e_request_latency_seconds_bucket"
        '{namespace="default",pod=~"sglang-canary-.*"}[60s])))',
    }


@pytest.mark.parametrize("profile", ["local", "kubernetes"])
def test_throughput_error_rate_and_memory_panels_draw_what_their_gates_judge(profile):
    c = config(profile)
    for arm in ARMS:
        served = panel_of(c, "throughput")
        assert served.queries[arm] == f"({own_query(c, 'throughput', 'requests', arm)}) / 60"
        assert (served.unit, served.bounds) == ("req/s", ())
        errors = panel_of(c, "error_rate")
        ratio = (
            f"({own_query(c, 'error_rate', 'errors', arm)}) / ({own_query(c, 'error_rate', 'requests', arm)})"
        )
        assert errors.queries[arm] == ratio
        assert (errors.unit, errors.scale, errors.bounds) == ("%", 100.0, (Bound("max", 0.001, ("canary",)),))
        memory = panel_of(c, "memory_leak")
        assert memory.queries[arm] == f"avg({own_query(c, 'memory_leak', 'memory', arm)})"
        assert (memory.unit, memory.scale, memory.bounds, memory.from_zero) == ("MiB", 2.0**-20, (), False)


def test_the_window_is_the_panels_own_not_the_evaluations():
    c = config("local")
    assert "[15s]" in panel_of(c, "latency_ttft_p99", window_s=15.0).queries["canary"]
    assert panel_of(c, "throughput", window_s=15.0).queries["canary"].endswith("[15s]))) / 15")


def test_a_dry_run_gate_is_drawn_and_says_so():
    c = config("local")
    gate = next(g for g in c.gates if g.name == "error_rate")
    (panel,) = KINDS["error_rate"].panel(dataclasses.replace(gate, dry_run=True), {}, WINDOW_S)
    assert panel.title.startswith("[dry-run] error_rate")


def test_a_latency_gate_on_load_test_samples_has_no_series_to_draw():
    gate = GateSpec(
        name="p99",
        kind="latency_quantile",
        queries={},
        params={**KINDS["latency_quantile"].defaults, "source": "loadtest", "max_seconds": 1.0},
        consecutive_failures=2,
        confidence=0.95,
    )
    assert KINDS["latency_quantile"].panel(gate, {}, WINDOW_S) == ()


def test_a_threshold_draws_both_bounds_and_its_own_unit():
    gate = GateSpec(
        name="queue",
        kind="threshold",
        queries={"value": 'queue_depth{arm="${arm}"}'},
        params={**KINDS["threshold"].defaults, "min": 1, "max": 8, "unit": "requests"},
        consecutive_failures=2,
        confidence=0.95,
        description="requests waiting in the scheduler's queue, sampled",
    )
    (panel,) = KINDS["threshold"].panel(gate, {}, WINDOW_S)
    assert panel.bounds == (Bound("max", 8.0, ("canary",)), Bound("min", 1.0, ("canary",)))
    assert (panel.unit, panel.scale) == ("requests", 1.0)
    assert panel.title == "queue: requests waiting in the scheduler's queue"
