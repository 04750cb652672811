"""Report files from a rollout state; the plot from a real matplotlib render; the gates' panels against a
real Prometheus."""

import json
import time
from dataclasses import replace

import pytest
from rollout_fakes import PROFILE, ScriptedGates, make_controller, run_until_terminal

from gates.config import load_gate_file
from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from rollout.controller import promote_locked
from rollout.report import (
    PanelData,
    RunOutline,
    collect_timeline,
    decision_record,
    gate_panels,
    panel_window_s,
    plot_timeline,
    weight_changes,
    write_report,
)
from rollout.routers.base import Weights

# The state-machine tests' plan with a shorter first bake: two evaluations at 10%, one at 50%.
REPORT_PROFILE = replace(PROFILE, name="t", bake_s=(20.0, 10.0, 10.0), settle_s=1.0, request_rate=5.0)


def reverted_state(tmp_path):
    gates = ScriptedGates("inconclusive", "pass", "fail", failing_gate="memory_leak")
    controller, _, clock = make_controller(tmp_path, gates, profile=REPORT_PROFILE, run_id="run-1")
    return run_until_terminal(controller, clock)


def test_decision_names_failed_gates_and_every_step_with_its_evaluations(tmp_path):
    state = reverted_state(tmp_path)
    decision = decision_record(state, loadtest_summary=None)
    assert decision["outcome"] == "reverted" and decision["failed_gates"] == ["memory_leak"]
    assert [(s["canary_weight"], s["result"]) for s in decision["steps"]] == [
        (10, "passed"),
        (50, "reverted"),
    ]
    assert [e["verdict"] for e in decision["steps"][0]["evaluations"]] == ["inconclusive", "pass"]
    assert decision["rollbacks"][0]["who"] == "rollout"


def test_write_report_makes_the_three_files_and_points_latest_at_the_run(tmp_path):
    state = reverted_state(tmp_path)
    t0 = state.started_at
    latency, cpu, *_ = gate_panels(load_gate_file(None, "local"), {}, 10.0)
    timeline = (
        PanelData(
            latency,
            {
                "baseline": tuple((t0 + i, 0.2) for i in range(40)),
                "canary": tuple((t0 + i, 0.3) for i in range(40)),
            },
            {},
        ),
        PanelData(cpu, {}, {"baseline": "unreachable: connection refused", "canary": "unreachable: ..."}),
    )
    reports = tmp_path / "reports"
    run_dir = write_report(state, reports, timeline=timeline)
    assert (reports / "latest").resolve() == run_dir.resolve()
    assert json.loads((run_dir / "decision.json").read_text())["run_id"] == "run-1"
    summary = (run_dir / "summary.md").read_text()
    assert "**reverted**" in summary and "memory_leak" in summary
    png = (run_dir / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    # A second run moves `latest` atomically.
    later = reverted_state(tmp_path / "b")
    object.__setattr__(later, "run_id", "run-2")
    write_report(later, reports, timeline=None)
    assert (reports / "latest").resolve().name == "run-2"


def test_the_weights_are_drawn_from_the_events_that_moved_traffic(tmp_path):
    state = reverted_state(tmp_path)
    changes = weight_changes(state.events)
    # each step's weights as the controller set them, then the rollback's 100% baseline
    assert [w for _, w in changes] == [Weights(90, 10), Weights(50, 50), Weights(100, 0)]
    assert [at for at, _ in changes] == sorted(at for at, _ in changes)
    assert RunOutline.of(state).weights == changes
    # a promotion by hand moves it all to the canary
    gates = ScriptedGates("pass")
    controller, router, clock = make_controller(tmp_path / "p", gates, profile=REPORT_PROFILE, run_id="run-p")
    controller.advance()
    promoted = promote_locked(
        controller.store.load(), router=router, hooks=(), who="ops", reason="ship", force=False, now=clock()
    )
    assert weight_changes(promoted.events)[-1] == (clock(), Weights(0, 100))
    outline = RunOutline.of(promoted)
    assert plot_timeline(outline, ())[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_panels_rate_window_is_the_step_never_under_the_profiles_floor():
    assert panel_window_s("local", 1.0) == 10.0  # 1 s scrapes: ten in a point
    assert panel_window_s("kubernetes", 1.0) == 60.0  # 30 s scrapes: two in a point
    assert panel_window_s("local", 22.5) == 23.0  # a long run: each point covers its step, whole seconds
    assert panel_window_s("kubernetes", 90.0) == 90.0


def _counter(name, labels, times, per_s):
    return (name, labels, [(t, per_s * (t - times[0])) for t in times])


@pytest.mark.integration
def test_cluster_panels_count_only_the_releases_pods(tmp_path):
    """A real Prometheus holding cAdvisor and kube-state-metrics series of the release and of its neighbours:
    the CPU gate's panel counts only the release's pods, per arm, as the gate's own query does."""
    release = {"baseline": "vlm-sglang-vlm-canary-baseline-[a-z0-9]+-[a-z0-9]+"}
    release["canary"] = release["baseline"].replace("baseline", "canary")
    end = float(int(time.time()) // 60 * 60 - 120)
    times = [end - 600 + 15 * i for i in range(41)]

    def pod(namespace, name, cores, limit):  # CPU-seconds growing by `cores` per second, under `limit`
        labels = {"namespace": namespace, "pod": name, "container": "sglang"}
        return [
            _counter("container_cpu_usage_seconds_total", labels, times, cores),
            (
                "kube_pod_container_resource_limits",
                {**labels, "resource": "cpu"},
                [(t, limit) for t in times],
            ),
        ]

    series = [
        *pod("serving", "vlm-sglang-vlm-canary-baseline-5d4f8-abcde", 2.0, 4.0),
        *pod("serving", "vlm-sglang-vlm-canary-canary-7c9b2-fghij", 3.0, 4.0),
        *pod("serving", "other-sglang-vlm-canary-canary-1a2b3-klmno", 5.0, 8.0),  # another release
        *pod(
            "staging", "vlm-sglang-vlm-canary-canary-7c9b2-pqrst", 7.0, 8.0
        ),  # same names, another namespace
    ]
    backfill(openmetrics_text(series), tmp_path / "tsdb")
    config = load_gate_file(None, "kubernetes")
    variables = config.merged_variables({"namespace": "serving", "pod_regex": release})
    with PrometheusServer(data_dir=tmp_path / "tsdb") as prometheus:
        timeline = collect_timeline(prometheus.url, config, variables, end - 300, end - 60)
    drawn = {d.panel.title.split(" ")[0].rstrip(":"): d for d in timeline}
    assert list(drawn) == [g.name for g in config.gates]
    cpu = drawn["cpu_utilisation"]
    assert set(cpu.series) == {"baseline", "canary"} and not cpu.errors, cpu.errors
    assert all(abs(v - 0.5) < 0.01 for _, v in cpu.series["baseline"])
    assert all(abs(v - 0.75) < 0.01 for _, v in cpu.series["canary"])
    assert "[60s]" in cpu.panel.queries["canary"]  # the kubernetes floor: a 240 s range steps by 1 s
    # no sglang series: every other panel says so per arm rather than drawing nothing silently
    latency = drawn["latency_e2e_p99"]
    assert not latency.series and set(latency.errors) == {"baseline", "canary"}
    assert latency.errors["canary"].startswith("no_values")


@pytest.mark.integration
def test_local_panels_draw_the_gates_quantile_rate_and_ratio_per_arm(tmp_path):
    """The local profile's series as the stack's Prometheus holds them: the latency gate's P99 (ms under its
    600 ms bound), the requests each arm served per second and its error ratio, each per arm."""
    end = float(int(time.time()) // 60 * 60 - 120)
    times = [end - 400 + i for i in range(401)]
    series = []
    for arm, rps, slow_share in (("baseline", 10.0, 0.0), ("canary", 4.0, 0.5)):
        # latency buckets: baseline's requests all in (0.1, 0.5] s, half the canary's in (0.5, 1] s
        metric = "sglang:e2e_request_latency_seconds_bucket"
        for le, share in (("0.1", 0.0), ("0.5", 1.0 - slow_share), ("1.0", 1.0), ("+Inf", 1.0)):
            series.append(_counter(metric, {"arm": arm, "le": le}, times, rps * share))
        series.append(_counter("sglang:num_requests_total", {"arm": arm}, times, rps))
        series.append(_counter("router_requests_total", {"arm": arm, "code": "200"}, times, rps * 0.99))
        series.append(_counter("router_requests_total", {"arm": arm, "code": "500"}, times, rps * 0.01))
    backfill(openmetrics_text(series), tmp_path / "tsdb")
    config = load_gate_file(None, "local")
    with PrometheusServer(data_dir=tmp_path / "tsdb") as prometheus:
        timeline = collect_timeline(prometheus.url, config, {}, end - 200, end)
    drawn = {d.panel.title.split(" ")[0].rstrip(":"): d for d in timeline}
    latency = drawn["latency_e2e_p99"]
    assert latency.panel.unit == "ms" and latency.panel.bounds[0].value * latency.panel.scale == 600.0
    # P99 interpolated in its bucket: 0.1 + 0.4 * 0.99 s for the baseline, 0.5 + 0.5 * 0.98 s for the canary
    assert all(abs(v - 0.496) < 0.002 for _, v in latency.series["baseline"])
    assert all(abs(v - 0.99) < 0.002 for _, v in latency.series["canary"])
    served = drawn["throughput"]
    assert all(abs(v - 10.0) < 0.1 for _, v in served.series["baseline"])
    assert all(abs(v - 4.0) < 0.1 for _, v in served.series["canary"])
    errors = drawn["error_rate"]
    assert all(abs(v - 0.01) < 1e-4 for arm in ("baseline", "canary") for _, v in errors.series[arm])
    assert len(latency.series["canary"]) > 150  # a point per step (1 s) over 200 s
