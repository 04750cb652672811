"""Report files from a rollout state; the plot from a real matplotlib render."""

import json
import time
from dataclasses import replace

import pytest
from rollout_fakes import PROFILE, ScriptedGates, make_controller, run_until_terminal

from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from rollout.report import LOCAL_PANELS, collect_timeline, decision_record, kubernetes_panels, write_report

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
    timeline = {
        LOCAL_PANELS[0].title: {
            "series": {
                "baseline": [(t0 + i, 0.2) for i in range(40)],
                "canary": [(t0 + i, 0.3) for i in range(40)],
            }
        },
        LOCAL_PANELS[2].title: {"series": {}, "error": "connection refused"},
    }
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


@pytest.mark.integration
def test_cluster_panels_count_only_the_releases_pods(tmp_path):
    """A real Prometheus holding cAdvisor series of the release and of its neighbours: only the release counts."""
    release = {"baseline": "vlm-sglang-vlm-canary-baseline-[a-z0-9]+-[a-z0-9]+"}
    release["canary"] = release["baseline"].replace("baseline", "canary")
    end = float(int(time.time()) // 60 * 60 - 120)
    times = [end - 600 + 15 * i for i in range(41)]

    def cpu(namespace, pod, cores):  # a counter growing by `cores` CPU-seconds per second
        labels = {"namespace": namespace, "pod": pod, "container": "sglang"}
        return ("container_cpu_usage_seconds_total", labels, [(t, cores * (t - times[0])) for t in times])

    series = [
        cpu("serving", "vlm-sglang-vlm-canary-baseline-5d4f8-abcde", 2.0),
        cpu("serving", "vlm-sglang-vlm-canary-canary-7c9b2-fghij", 3.0),
        cpu("serving", "other-sglang-vlm-canary-canary-1a2b3-klmno", 5.0),  # another release
        cpu("staging", "vlm-sglang-vlm-canary-canary-7c9b2-pqrst", 7.0),  # same names, another namespace
    ]
    backfill(openmetrics_text(series), tmp_path / "tsdb")
    panels = kubernetes_panels({"namespace": "serving", "pod_regex": release})
    with PrometheusServer(data_dir=tmp_path / "tsdb") as prometheus:
        timeline = collect_timeline(prometheus.url, end - 300, end - 60, panels)
    cpu_series = timeline["CPU used (cores)"]["series"]
    assert set(cpu_series) == {"baseline", "canary"}, timeline["CPU used (cores)"]
    assert all(abs(v - 2.0) < 0.01 for _, v in cpu_series["baseline"])
    assert all(abs(v - 3.0) < 0.01 for _, v in cpu_series["canary"])
