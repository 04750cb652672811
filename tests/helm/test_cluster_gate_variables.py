"""The gate variables a cluster rollout passes: derived in one place (rollout.sites.cluster) from the chart's
naming, and a gate file's own values win except the packaged placeholders."""

from __future__ import annotations

import re

import pytest

from gates.config import load_gate_file
from rollout.__main__ import main
from rollout.sites.cluster import ClusterTarget, cluster_gate_variables

PACKAGED = load_gate_file(None, profile="kubernetes").variables


def target(env: dict[str, str] | None = None) -> ClusterTarget:
    return ClusterTarget.resolve(namespace="ml", release="demo", prometheus_url="http://p", env=env or {})


def test_pod_regex_matches_one_arms_deployment_pods_only():
    t = target()
    regex = t.gate_variables()["pod_regex"]
    assert re.fullmatch(regex["canary"], "demo-sglang-vlm-canary-canary-7c9d8f6b5-x2k4q")
    assert not re.fullmatch(regex["canary"], "demo-sglang-vlm-canary-baseline-7c9d8f6b5-x2k4q")
    assert not re.fullmatch(regex["baseline"], "demo-sglang-vlm-canary-rollout-r3-abcde")  # the Job's pod
    assert t.gate_variables()["namespace"] == "ml"


def test_pod_regex_follows_the_jobs_deployment_names():
    t = target({"ROLLOUT_CANARY_DEPLOYMENT": "vlm.canary", "ROLLOUT_CANARY_SERVICE": "svc-c"})
    assert t.pod_regex("canary") == r"vlm\.canary-[a-z0-9]+-[a-z0-9]+"
    assert t.canary_service == "svc-c" and t.baseline_service == "demo-sglang-vlm-canary-baseline"


def test_packaged_placeholders_never_win_over_the_release():
    merged = cluster_gate_variables(target(), file_variables=PACKAGED, packaged_variables=PACKAGED)
    assert merged == target().gate_variables()


def test_a_gate_files_own_values_win():
    own = {**PACKAGED, "pod_regex": {"baseline": "a-.*", "canary": "b-.*"}, "extra": "x"}
    merged = cluster_gate_variables(target(), file_variables=own, packaged_variables=PACKAGED)
    assert merged == {
        "namespace": "ml",
        "pod_regex": {"baseline": "a-.*", "canary": "b-.*"},
        "gateway_service_regex": target().gate_variables()["gateway_service_regex"],
        "extra": "x",
    }


def test_gateway_service_regex_matches_one_arms_traefik_service_only():
    """Traefik's Gateway API provider names a backendRef's service `<router>-svc-<namespace>-<Service>-<i>`."""
    regex = target().gate_variables()["gateway_service_regex"]
    router = "httproute-ml-demo-sglang-vlm-canary-gw-traefik-gw-ep-web-0-1c0cf64bde37d9d0bfad"
    assert re.fullmatch(regex["canary"], f"{router}-svc-ml-demo-sglang-vlm-canary-canary-1@kubernetesgateway")
    assert not re.fullmatch(
        regex["canary"], f"{router}-svc-ml-demo-sglang-vlm-canary-baseline-0@kubernetesgateway"
    )
    assert not re.fullmatch(
        regex["baseline"], f"{router}-svc-other-demo-sglang-vlm-canary-baseline-0@kubernetesgateway"
    )
    assert re.fullmatch(
        regex["baseline"], f"{router}-svc-ml-demo-sglang-vlm-canary-baseline-0@kubernetesgateway"
    )
    assert not re.fullmatch(regex["baseline"], f"{router}-wrr@kubernetesgateway")  # the split itself


def test_run_without_prometheus_is_a_usage_error_but_rollback_needs_none(capsys, monkeypatch):
    monkeypatch.delenv("ROLLOUT_PROMETHEUS_URL", raising=False)
    assert main(["run", "--kube-namespace", "ml", "--release", "demo"]) == 3
    assert "--prometheus-url" in capsys.readouterr().err
    assert ClusterTarget.resolve(namespace="ml", release="demo", env={}).prometheus_url is None
    with pytest.raises(ValueError, match="--prometheus-url"):
        ClusterTarget.resolve(namespace="ml", release="demo", env={}).require_prometheus()
