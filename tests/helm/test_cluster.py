"""The chart against a real control plane: kube-apiserver with RBAC, scheduler, controllers, kwok GPU nodes.

Every ci/ scenario installs with helm; server pods land on the two 8-GPU nodes or stay Pending with
the scheduler saying why (a third, CPU-only node takes the Jobs); the server accepts every rendered manifest; the orchestrator's Role allows exactly what
the orchestrator needs, proven by acting as its ServiceAccount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart_render import CHART, RELEASE, ROOT, SCENARIOS
from helm_chart_render import helm_on as helm

pytestmark = pytest.mark.k8s

GPUS_PER_NODE = 8


def get_json(cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def claims_in(manifests: str) -> set[str]:
    claims = set()
    for obj in yaml.safe_load_all(manifests):
        spec = (obj or {}).get("spec", {}).get("template", {}).get("spec", {})
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claims.add(volume["persistentVolumeClaim"]["claimName"])
    return claims


def provide_claims(cluster, namespace: str, claims: set[str]) -> None:
    """A bound PersistentVolumeClaim for each claim a scenario names, so its pods can be scheduled."""
    for claim in sorted(claims):
        pv = f"{namespace}-{claim}"
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input_text=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolume",
                            "metadata": {"name": pv},
                            "spec": {
                                "capacity": {"storage": "1Gi"},
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "manual",
                                "hostPath": {"path": f"/tmp/{pv}"},
                                "claimRef": {"namespace": namespace, "name": claim},
                            },
                        },
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": claim, "namespace": namespace},
                            "spec": {
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "manual",
                                "volumeName": pv,
                                "resources": {"requests": {"storage": "1Gi"}},
                            },
                        },
                    ],
                }
            ),
        )


def server_pods(cluster, namespace: str) -> list[dict[str, Any]]:
    pods = get_json(
        cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/component in (baseline,canary)"
    )
    return pods["items"]


def wait_for(predicate, timeout_s: float, what: str, describe=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{describe()}")
        time.sleep(0.5)


def scheduling_report(cluster, namespace: str) -> dict[str, str]:
    """Pod name -> where it runs, or the scheduler's reason for leaving it Pending."""
    report = {}
    for pod in server_pods(cluster, namespace):
        name = pod["metadata"]["name"]
        if pod["spec"].get("nodeName"):
            report[name] = f"on {pod['spec']['nodeName']} ({pod['status'].get('phase')})"
            continue
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        report[name] = (
            f"Pending: {scheduled.get('reason', '?')}: {scheduled.get('message', 'not yet considered')}"
        )
    return report


def test_control_plane_offers_two_gpu_nodes(cluster):
    nodes = get_json(cluster, "nodes", "-l", "nvidia.com/gpu.present=true")["items"]
    assert len(nodes) == 2
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPUS_PER_NODE)
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert ready["Ready"] == "True"
    crds = {c["metadata"]["name"] for c in get_json(cluster, "crds")["items"]}
    assert {
        "httproutes.gateway.networking.k8s.io",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
    } <= crds


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_server_dry_run_accepts_every_rendered_manifest(cluster, scenario):
    namespace = "dry-" + scenario.removesuffix("-values.yaml")
    cluster.create_namespace(namespace)
    rendered = helm(
        cluster,
        "template",
        RELEASE,
        str(CHART),
        "--validate",
        "-n",
        namespace,
        "-f",
        str(CHART / "ci" / scenario),
    ).stdout
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input_text=rendered, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    assert len(result.stdout.strip().splitlines()) == sum(1 for d in yaml.safe_load_all(rendered) if d)
    assert {"Deployment", "Service", "HTTPRoute"} <= kinds


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_install_schedules_onto_gpu_nodes_or_reports_why_not(cluster, scenario):
    namespace = "inst-" + scenario.removesuffix("-values.yaml")
    values = CHART / "ci" / scenario
    cluster.create_namespace(namespace)
    rendered = helm(
        cluster, "template", RELEASE, str(CHART), "--validate", "-n", namespace, "-f", str(values)
    ).stdout
    provide_claims(cluster, namespace, claims_in(rendered))
    installed = helm(cluster, "install", RELEASE, str(CHART), "-n", namespace, "-f", str(values)).stdout
    try:
        # NOTES.txt renders only on install: it must name the arms, the route and how to roll back.
        notes = installed.split("NOTES:", 1)[1]
        assert f"Deployment and Service {RELEASE}-" in notes and "helm test" in notes, notes
        route_name = (
            yaml.safe_load(values.read_text()).get("fullnameOverride") or f"{RELEASE}-sglang-vlm-canary"
        )
        assert f"kubectl -n {namespace} get httproute {route_name}" in notes, notes
        deployments = get_json(cluster, "deployments", "-n", namespace)["items"]
        wanted = sum(d["spec"]["replicas"] for d in deployments)
        gpus_each = {
            d["metadata"]["name"]: int(
                d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            )
            for d in deployments
        }
        fit = (2 * GPUS_PER_NODE) // max(
            gpus_each.values()
        )  # pods that fit on the two nodes (same size each)

        def settled():
            report = scheduling_report(cluster, namespace)
            placed = [v for v in report.values() if v.startswith("on ") and v.endswith("(Running)")]
            pending = [v for v in report.values() if v.startswith("Pending: Unschedulable")]
            return (
                report
                if len(report) == wanted
                and len(placed) == min(wanted, fit)
                and len(placed) + len(pending) == wanted
                else None
            )

        report = wait_for(
            settled,
            90,
            f"{wanted} server pods placed or reported unschedulable in {namespace}",
            lambda: json.dumps(scheduling_report(cluster, namespace), indent=1),
        )
        print(f"{scenario}: " + json.dumps(report, indent=1))
        for pod in server_pods(cluster, namespace):
            if pod["spec"].get("nodeName"):
                assert pod["spec"]["nodeName"].startswith("gpu-node-")
        for line in report.values():
            if line.startswith("Pending"):
                # The scheduler names the missing resource: the report says why, not just "Pending".
                assert "0/3 nodes are available" in line and "Insufficient nvidia.com/gpu" in line, line
        route = get_json(cluster, "httproute", "-n", namespace)["items"]
        assert len(route) == 1

        # The Jobs (orchestrator, Locust) need no GPU: they are scheduled on the CPU node and run to the
        # end (kwok completes Job pods).
        def jobs_done():
            jobs = get_json(cluster, "jobs", "-n", namespace)["items"]
            return all(j["status"].get("succeeded", 0) >= (j["spec"].get("completions") or 1) for j in jobs)

        wait_for(
            jobs_done,
            60,
            f"the Jobs in {namespace} to complete",
            lambda: cluster.kubectl("get", "pods,jobs", "-n", namespace, "-o", "wide").stdout,
        )
        for pod in get_json(cluster, "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name")["items"]:
            assert pod["spec"]["nodeName"] == "cpu-node-0", pod["metadata"]["name"]
    finally:
        helm(cluster, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m")


# --- RBAC: act as the orchestrator's ServiceAccount (impersonation) ---------------------------------

RBAC_NS = "rbac"
FULL = f"{RELEASE}-sglang-vlm-canary"
SA = f"system:serviceaccount:{RBAC_NS}:{FULL}-orchestrator"


@pytest.fixture(scope="module")
def rbac_release(cluster):
    cluster.create_namespace(RBAC_NS)
    cluster.create_namespace(f"{RBAC_NS}-other")
    helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        RBAC_NS,
        "-f",
        str(CHART / "ci" / "default-values.yaml"),
    )
    # A second release's route in the same namespace: the Role must not reach it.
    cluster.kubectl(
        "apply",
        "-n",
        RBAC_NS,
        "-f",
        "-",
        input_text=json.dumps(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "someone-else"},
                "spec": {"rules": [{"backendRefs": [{"name": "x", "port": 80}]}]},
            }
        ),
    )
    yield cluster
    helm(cluster, "uninstall", RELEASE, "-n", RBAC_NS, "--wait", "--timeout", "2m")


def as_orchestrator(cluster, *args: str, input_text: str | None = None):
    return cluster.kubectl("--as", SA, "-n", RBAC_NS, *args, input_text=input_text, check=False)


ALLOWED = [
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("get", "deployments.apps"),
    ("list", "deployments.apps"),
    ("watch", "deployments.apps"),
    ("patch", f"deployments.apps/{FULL}-canary"),
    ("get", f"deployments.apps/{FULL}-canary", "--subresource=scale"),
    ("update", f"deployments.apps/{FULL}-canary", "--subresource=scale"),
    ("patch", f"deployments.apps/{FULL}-canary", "--subresource=scale"),
    ("get", f"httproutes.gateway.networking.k8s.io/{FULL}"),
    ("patch", f"httproutes.gateway.networking.k8s.io/{FULL}"),
    ("get", f"configmaps/{FULL}-rollout-state"),
    ("update", f"configmaps/{FULL}-rollout-state"),
]
FORBIDDEN = [
    ("patch", f"deployments.apps/{FULL}-baseline"),
    ("update", f"deployments.apps/{FULL}-baseline", "--subresource=scale"),
    ("patch", f"deployments.apps/{FULL}-baseline", "--subresource=scale"),
    ("delete", f"deployments.apps/{FULL}-canary"),
    ("create", "deployments.apps"),
    ("update", f"deployments.apps/{FULL}-canary"),
    ("patch", "httproutes.gateway.networking.k8s.io/someone-else"),
    ("update", f"httproutes.gateway.networking.k8s.io/{FULL}"),
    ("delete", f"httproutes.gateway.networking.k8s.io/{FULL}"),
    ("list", "httproutes.gateway.networking.k8s.io"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("list", "configmaps"),
    ("get", "configmaps/kube-root-ca.crt"),
    ("patch", f"configmaps/{FULL}-rollout-state"),
    ("delete", f"configmaps/{FULL}-rollout-state"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods", "--subresource=exec"),
    ("patch", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]


@pytest.mark.parametrize("action", ALLOWED, ids=lambda a: " ".join(a))
def test_orchestrator_account_may(rbac_release, action):
    result = as_orchestrator(rbac_release, "auth", "can-i", *action)
    assert result.stdout.strip() == "yes", f"{action}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("action", FORBIDDEN, ids=lambda a: " ".join(a))
def test_orchestrator_account_may_not(rbac_release, action):
    result = as_orchestrator(rbac_release, "auth", "can-i", *action)
    assert result.stdout.strip() == "no", f"{action}: {result.stdout}{result.stderr}"


def test_orchestrator_account_cannot_reach_other_namespaces(rbac_release):
    result = rbac_release.kubectl(
        "--as", SA, "-n", f"{RBAC_NS}-other", "auth", "can-i", "list", "pods", check=False
    )
    assert result.stdout.strip() == "no"


def set_route_weights(cluster, baseline: int, canary: int) -> None:
    for index, weight in ((0, baseline), (1, canary)):
        cluster.kubectl(
            "patch",
            "httproute",
            FULL,
            "-n",
            RBAC_NS,
            "--type",
            "json",
            "-p",
            json.dumps(
                [{"op": "replace", "path": f"/spec/rules/0/backendRefs/{index}/weight", "value": weight}]
            ),
        )


def route_weights(cluster) -> list[int]:
    route = get_json(cluster, "httproute", FULL, "-n", RBAC_NS)
    return [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]]


def test_helm_upgrade_without_a_new_build_leaves_the_orchestrators_weights(rbac_release):
    set_route_weights(rbac_release, 50, 50)
    helm(
        rbac_release,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        RBAC_NS,
        "-f",
        str(CHART / "ci" / "default-values.yaml"),
        "--set",
        "orchestrator.profile=quick",
    )
    assert route_weights(rbac_release) == [50, 50]


def test_orchestrator_account_moves_weights_and_scales_canary_for_real(rbac_release):
    patch = {
        "spec": {
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {
                            "name": f"{FULL}-baseline",
                            "port": 30000,
                            "weight": 90,
                            "filters": [
                                {
                                    "type": "ResponseHeaderModifier",
                                    "responseHeaderModifier": {
                                        "set": [{"name": "x-canary-arm", "value": "baseline"}]
                                    },
                                }
                            ],
                        },
                        {
                            "name": f"{FULL}-canary",
                            "port": 30000,
                            "weight": 10,
                            "filters": [
                                {
                                    "type": "ResponseHeaderModifier",
                                    "responseHeaderModifier": {
                                        "set": [{"name": "x-canary-arm", "value": "canary"}]
                                    },
                                }
                            ],
                        },
                    ],
                }
            ]
        }
    }
    result = as_orchestrator(
        rbac_release, "patch", "httproute", FULL, "--type", "merge", "-p", json.dumps(patch)
    )
    assert result.returncode == 0, result.stderr
    route = get_json(rbac_release, "httproute", FULL, "-n", RBAC_NS)
    assert [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]] == [90, 10]

    result = as_orchestrator(rbac_release, "scale", f"deployment/{FULL}-canary", "--replicas", "0")
    assert result.returncode == 0, result.stderr
    assert get_json(rbac_release, "deployment", f"{FULL}-canary", "-n", RBAC_NS)["spec"]["replicas"] == 0

    state = get_json(rbac_release, "configmap", f"{FULL}-rollout-state", "-n", RBAC_NS)
    state["data"] = {"phase": "progressing", "step": "1"}
    result = as_orchestrator(rbac_release, "replace", "-f", "-", input_text=json.dumps(state))
    assert result.returncode == 0, result.stderr
    assert get_json(rbac_release, "configmap", f"{FULL}-rollout-state", "-n", RBAC_NS)["data"]["step"] == "1"


def test_orchestrator_account_is_refused_what_it_was_not_granted(rbac_release):
    result = as_orchestrator(rbac_release, "scale", f"deployment/{FULL}-baseline", "--replicas", "0")
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr
    assert get_json(rbac_release, "deployment", f"{FULL}-baseline", "-n", RBAC_NS)["spec"]["replicas"] == 1
    result = as_orchestrator(
        rbac_release,
        "patch",
        "httproute",
        "someone-else",
        "--type",
        "merge",
        "-p",
        '{"metadata": {"labels": {"taken": "yes"}}}',
    )
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stderr


def test_helm_upgrade_keeps_the_orchestrators_state(rbac_release):
    # Runs after the real-action test wrote state: an upgrade must not wipe it (the chart renders no data).
    set_route_weights(rbac_release, 90, 10)
    state = get_json(rbac_release, "configmap", f"{FULL}-rollout-state", "-n", RBAC_NS)
    if "data" not in state:
        rbac_release.kubectl(
            "patch",
            "configmap",
            f"{FULL}-rollout-state",
            "-n",
            RBAC_NS,
            "--type",
            "merge",
            "-p",
            '{"data": {"step": "1"}}',
        )
    helm(
        rbac_release,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        RBAC_NS,
        "-f",
        str(CHART / "ci" / "default-values.yaml"),
        "--set",
        "arms.canary.image.tag=0.5.23-rc2",
    )
    assert get_json(rbac_release, "configmap", f"{FULL}-rollout-state", "-n", RBAC_NS)["data"]["step"] == "1"
    # A new canary build: helm's three-way merge puts the canary's replicas back to the values, and the
    # changed builds header replaces the route's rules, so the new build starts with no traffic.
    route = get_json(rbac_release, "httproute", FULL, "-n", RBAC_NS)
    assert [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    assert get_json(rbac_release, "deployment", f"{FULL}-canary", "-n", RBAC_NS)["spec"]["replicas"] == 1
    revision = json.loads(helm(rbac_release, "status", RELEASE, "-n", RBAC_NS, "-o", "json").stdout)[
        "version"
    ]
    jobs = [j["metadata"]["name"] for j in get_json(rbac_release, "jobs", "-n", RBAC_NS)["items"]]
    assert revision > 1 and jobs == [f"{FULL}-rollout-r{revision}"], jobs


# The orchestrator's own Kubernetes calls (rollout/kube.py through its router and wrappers), run with a
# real token of the chart's ServiceAccount: the Role is sufficient for what the code does.
ORCHESTRATOR_ROUTE_CALLS = """
import json, sys
from rollout.routers.base import Weights
from rollout.routers.httproute import HTTPRouteRouter

ns, full = sys.argv[1], sys.argv[2]
services = {"baseline": full + "-baseline", "canary": full + "-canary"}
router = HTTPRouteRouter(namespace=ns, route=full, services=services)
router.set_weights(Weights(50, 50))
weights = router.get_weights()
print(json.dumps([weights.baseline, weights.canary]))
"""
ORCHESTRATOR_STATE_AND_SCALE_CALLS = """
import json, sys
from rollout import kube

ns, full = sys.argv[1], sys.argv[2]
state = full + "-rollout-state"
data, version = kube.get_configmap(context=None, namespace=ns, name=state)
kube.replace_configmap_data(context=None, namespace=ns, name=state, data={"probe": "written"}, resource_version=version)
kube.scale_deployment(context=None, namespace=ns, name=full + "-canary", replicas=2)
try:
    kube.scale_deployment(context=None, namespace=ns, name=full + "-baseline", replicas=0)
    refused = ""
except kube.KubeError as exc:
    refused = str(exc)
print(json.dumps(refused))
"""


def run_as_orchestrator(cluster, tmp_path: Path, script: str) -> Any:
    kubeconfig = cluster.service_account_kubeconfig(RBAC_NS, f"{FULL}-orchestrator", tmp_path / "sa")
    whoami = cluster.kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == SA
    proc = subprocess.run(
        [sys.executable, "-c", script, RBAC_NS, FULL],
        env=os.environ | {"KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_orchestrator_state_and_scale_calls_work_with_the_service_account_token(rbac_release, tmp_path):
    refused = run_as_orchestrator(rbac_release, tmp_path, ORCHESTRATOR_STATE_AND_SCALE_CALLS)
    assert "HTTP 403" in refused, refused
    assert get_json(rbac_release, "configmap", f"{FULL}-rollout-state", "-n", RBAC_NS)["data"] == {
        "probe": "written"
    }
    assert get_json(rbac_release, "deployment", f"{FULL}-canary", "-n", RBAC_NS)["spec"]["replicas"] == 2
    assert get_json(rbac_release, "deployment", f"{FULL}-baseline", "-n", RBAC_NS)["spec"]["replicas"] == 1


def test_orchestrator_route_calls_work_with_the_service_account_token(rbac_release, tmp_path):
    assert run_as_orchestrator(rbac_release, tmp_path, ORCHESTRATOR_ROUTE_CALLS) == [50, 50]
    route = get_json(rbac_release, "httproute", FULL, "-n", RBAC_NS)
    assert [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]] == [50, 50]
