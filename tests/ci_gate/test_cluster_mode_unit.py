"""Cluster mode without a cluster: the router is substituted at our own layer (`HTTPRouteRouter`'s
interface) and Prometheus is an address nothing listens on, so no gate can pass. What must hold: the
route ends at 100% baseline whatever happens, a failed restore is never a pass, bad options exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.net import free_port
from rollout import ci_gate
from rollout.__main__ import ci_gate_main
from rollout.ci_gate import GateOnceOptions, ci_gate_config, gate_once
from rollout.gating import load_gate_config
from rollout.routers.base import RouterUnavailable, Verification, WeightCheck, Weights
from rollout.sites.base import Site
from rollout.sites.cluster import ClusterTarget, cluster_site


class RecordingRouter:
    """Records every weight change; `fail_split` / `fail_restore` make those calls raise like the API."""

    def __init__(self, *, fail_split: bool = False, fail_restore: bool = False) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_split, self.fail_restore = fail_split, fail_restore

    def describe(self) -> dict:
        return {"kind": "recording", "route": "r"}

    name = "recording"

    def set_weights(self, weights: Weights) -> None:
        self.calls.append((weights.baseline, weights.canary))
        if (weights.canary and self.fail_split) or (not weights.canary and self.fail_restore):
            raise RouterUnavailable(f"HTTPRoute ns/r: weights not set ({weights.baseline}/{weights.canary})")

    def get_weights(self) -> Weights:
        return Weights(*self.calls[-1]) if self.calls else Weights(100, 0)

    def verify_weights(self, expected: Weights) -> Verification:
        return Verification(WeightCheck.MATCHES if self.get_weights() == expected else WeightCheck.DIFFERS)


def _site(router: RecordingRouter) -> Site:
    target = ClusterTarget.resolve(
        namespace="ns", release="rel", prometheus_url=f"http://127.0.0.1:{free_port()}", env={}
    )
    return cluster_site(target, router=router)


def _options(tmp_path: Path, **changes) -> GateOnceOptions:
    values = {
        "duration_s": 0.2,
        "warmup_s": 0.0,
        "settle_s": 0.0,
        "reports_dir": tmp_path / "reports",
        "step_summary": tmp_path / "step-summary.md",
    }
    return GateOnceOptions(**{**values, **changes})


def _decision(tmp_path: Path) -> dict:
    return json.loads(next((tmp_path / "reports").glob("*/decision.json")).read_text())


def test_no_prometheus_data_is_no_pass_and_the_route_ends_at_baseline(tmp_path: Path) -> None:
    router = RecordingRouter()
    outcome = gate_once(_site(router), _options(tmp_path, allow_inconclusive=False), say=lambda _: None)
    assert router.calls == [(50, 50), (100, 0)]
    assert outcome.verdict == "inconclusive" and outcome.exit_code == 2  # no data: never 0, never 1
    decision = _decision(tmp_path)
    assert decision["route_restored"] is True and decision["exit_code"] == 2
    # The orchestrator's variables for this release: its namespace, one pod regex per arm.
    assert decision["gate_variables"]["namespace"] == "ns"
    assert decision["gate_variables"]["pod_regex"]["canary"].startswith("rel-sglang-vlm-canary-canary")
    assert (outcome.report_dir / "junit.xml").is_file()
    assert "Deployment ns/rel-sglang-vlm-canary-canary" in (tmp_path / "step-summary.md").read_text()


def test_the_report_draws_each_gates_panel_and_the_split_it_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = []
    plot = ci_gate.plot_timeline

    def recording_plot(outline, timeline):
        drawn.append((outline, timeline))
        return plot(outline, timeline)

    monkeypatch.setattr(ci_gate, "plot_timeline", recording_plot)
    gate_once(_site(RecordingRouter()), _options(tmp_path), say=lambda _: None)
    ((outline, timeline),) = drawn
    assert [w for _, w in outline.weights] == [Weights(50, 50), Weights(100, 0)]  # set, then restored
    shipped = load_gate_config(None, gate_profile="kubernetes")
    assert [d.panel.title.split(" ")[0].rstrip(":") for d in timeline] == [g.name for g in shipped.gates]
    # the gates' own queries over this release's pods; Prometheus unreachable: every arm says so, asked once
    assert 'pod=~"rel-sglang-vlm-canary-canary' in timeline[0].panel.queries["canary"]
    assert all(not d.series and set(d.errors) == {"baseline", "canary"} for d in timeline)
    assert all(e.startswith("unreachable: ") for d in timeline for e in d.errors.values())


def test_a_route_not_restored_is_never_a_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci_gate, "RESTORE_PAUSE_S", 0.0)
    router = RecordingRouter(fail_restore=True)
    outcome = gate_once(_site(router), _options(tmp_path, allow_inconclusive=True), say=lambda _: None)
    assert router.calls == [(50, 50)] + [(100, 0)] * ci_gate.RESTORE_ATTEMPTS
    assert outcome.exit_code == 2  # even with --allow-inconclusive
    assert "route not restored" in outcome.reason
    summary = (outcome.report_dir / "summary.md").read_text()
    assert "Route NOT restored to 100% baseline" in summary and "100/0" in summary
    assert _decision(tmp_path)["route_restored"] is False


def test_a_split_refused_by_the_api_still_restores_and_reports(tmp_path: Path) -> None:
    router = RecordingRouter(fail_split=True)
    with pytest.raises(RouterUnavailable):
        gate_once(_site(router), _options(tmp_path), say=lambda _: None)
    assert router.calls == [(50, 50), (100, 0)]
    decision = _decision(tmp_path)
    assert decision["verdict"] == "inconclusive" and "RouterUnavailable" in decision["reason"]


def test_cluster_gates_are_the_shipped_kubernetes_gates_deciding_at_once() -> None:
    config = ci_gate_config(_site(RecordingRouter()), None)
    shipped = load_gate_config(None, gate_profile="kubernetes")
    assert [g.name for g in config.gates] == [g.name for g in shipped.gates]
    assert {g.consecutive_failures for g in config.gates} == {1}
    for mine, theirs in zip(config.gates, shipped.gates, strict=True):  # no local sizing on a cluster
        assert mine.params == theirs.params, mine.name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kube-namespace", "ns"], "--release"),
        (["--release", "rel", "--kube-namespace", "ns", "--candidate-cmd", "x {port}"], "--candidate-cmd"),
        (["--release", "rel", "--kube-namespace", "ns"], "--prometheus-url"),
        (
            ["--release", "rel", "--kube-namespace", "ns", "--prometheus-url", "http://p", "--settle", "-1"],
            "settle_s",
        ),
        (
            ["--release", "rel", "--kube-namespace", "ns", "--prometheus-url", "http://p", "--rate", "0"],
            "offered_rps",
        ),
    ],
)
def test_cluster_usage_errors_exit_3_and_name_the_option(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("ROLLOUT_PROMETHEUS_URL", raising=False)
    assert ci_gate_main([*argv, "--reports-dir", str(tmp_path / "reports")]) == 3
    assert message in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"canary_weight": 0}, "canary_weight"),
        ({"duration_s": 0.0}, "duration_s"),
        ({"settle_s": -1.0}, "settle_s"),
        ({"offered_rps": 0.0}, "offered_rps"),
    ],
)
def test_bad_cluster_options_are_named(changes: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        _options(tmp_path, **changes)
