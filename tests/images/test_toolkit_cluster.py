"""The toolkit image runs the orchestrator against the local control plane as the chart's Job would run it:
the Job's image, command, arguments, environment, user and read-only root, on the host network, with the
chart's ServiceAccount token mounted at the standard in-cluster path (no kubeconfig). It moves the
release's HTTPRoute one step, is killed, and `python -m rollout rollback` from the same image restores
baseline; the gates it evaluates in between query a real Prometheus on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_series import (
    FULL,
    backfilled_prometheus,
    gate_file_without_memory_leak,
    installed_releases,
    route_weights,
)
from helm_chart_render import CHART, RELEASE, ROOT, load_tool
from helm_chart_render import helm_on as helm
from image_harness import run_container

from testkit.synthetic_arms import ArmBehaviour

pytestmark = [pytest.mark.images, pytest.mark.k8s]

NAMESPACE = "toolkit-image"
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
GATES_DIR = "/etc/sglang-vlm-canary"  # where the chart mounts orchestrator.gatesConfig
# The first step bakes long enough to be interrupted in it; an evaluation every 3 s.
PLAN = ("--profile", "quick", "--steps", "10,50,100", "--bake", "120,9,9", "--interval", "3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True, timeout=1800)
    with load_tool("k8s/cluster").running(tmp_path_factory.mktemp("k8s") / "cluster") as running:
        yield running


@pytest.fixture(scope="module")
def release(cluster):
    with installed_releases(cluster, helm, CHART, [NAMESPACE]) as pods:
        yield pods


@pytest.fixture(scope="module")
def prometheus(release, tmp_path_factory):
    canaries = {NAMESPACE: ArmBehaviour(rps=80.0)}
    with backfilled_prometheus(release, canaries, tmp_path_factory.mktemp("tsdb"), seed=5000) as server:
        yield server


def mounted_service_account(cluster, directory: Path) -> Path:
    """What the kubelet mounts for the orchestrator's pod: a token of the chart's ServiceAccount, the API
    server's CA and the namespace."""
    token = cluster.kubectl(
        "create", "token", f"{FULL}-orchestrator", "-n", NAMESPACE, "--duration", "1h"
    ).stdout.strip()
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "namespace").write_text(NAMESPACE)
    (directory / "ca.crt").write_bytes((cluster.workdir / "pki" / "apiserver.crt").read_bytes())
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)
    return directory


def chart_job_pod(cluster) -> tuple[str, dict[str, Any]]:
    jobs = json.loads(
        cluster.kubectl(
            "get", "jobs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=orchestrator", "-o", "json"
        ).stdout
    )["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return jobs[0]["metadata"]["name"], jobs[0]["spec"]["template"]["spec"]


def as_podman_options(pod: dict[str, Any], pod_name: str, env_overrides: dict[str, str]) -> tuple[str, ...]:
    """The pod's container as `podman run` options: its user, security context, emptyDirs as tmpfs, and
    its environment with the downward API resolved (and the kubelet's API server variables added)."""
    container = pod["containers"][0]
    security = container["securityContext"]
    options = ["--user", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    options += [f"--cap-drop={c}" for c in security.get("capabilities", {}).get("drop", [])]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for mount in container["volumeMounts"]:
        assert mount["name"] in empty_dirs, f"unexpected volume {mount}"
        options += ["--tmpfs", mount["mountPath"]]
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": pod_name}
    env: dict[str, str] = {}
    for var in container["env"]:
        env[var["name"]] = (
            var["value"] if "value" in var else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        )
    for name, value in (env | env_overrides).items():
        options += ["--env", f"{name}={value}"]
    return tuple(options)


def stored_state(cluster) -> dict[str, Any]:
    cm = json.loads(
        cluster.kubectl("get", "configmap", f"{FULL}-rollout-state", "-n", NAMESPACE, "-o", "json").stdout
    )
    return json.loads(cm["data"]["state.json"])


def test_orchestrator_image_moves_the_route_one_step_then_rollback_restores_baseline(
    cluster, release, prometheus, engine, toolkit, tmp_path
):
    job_name, pod = chart_job_pod(cluster)
    container = pod["containers"][0]
    assert container["image"] == toolkit.ref  # the chart's default reference is the image `make images` built
    pod_name = f"{job_name}-podman"
    gate_file = gate_file_without_memory_leak(tmp_path)
    gate_file.chmod(0o644)
    api = cluster.server.removeprefix("https://")
    host, port = api.rsplit(":", 1)
    options = as_podman_options(
        pod,
        pod_name,
        {
            "ROLLOUT_PROMETHEUS_URL": prometheus.url,
            "ROLLOUT_GATES_CONFIG": f"{GATES_DIR}/gates.yaml",  # as orchestrator.gatesConfig sets it
            "KUBERNETES_SERVICE_HOST": host,  # what the kubelet sets in every pod
            "KUBERNETES_SERVICE_PORT": port,
        },
    ) + (
        "-v",
        f"{mounted_service_account(cluster, tmp_path / 'sa')}:{SERVICE_ACCOUNT_PATH}:ro",
        "-v",
        f"{gate_file}:{GATES_DIR}/gates.yaml:ro",
    )
    name = f"toolkit-orchestrator-{os.getpid()}"
    engine.run(
        "run",
        "-d",
        "--name",
        name,
        *options,
        container["image"],
        *container["command"],
        *container["args"],
        *PLAN,
    )
    try:
        deadline = time.monotonic() + 90
        # Until the gates, run from the image against the host's Prometheus, pass at 10% on both arms' data.
        while route_weights(cluster, NAMESPACE) != (90, 10) or not any(
            e.get("verdict") == "pass" for e in stored_state(cluster).get("evaluations", [])
        ):
            running = engine.run("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert running == "true", engine.run("logs", name).stderr[-3000:]
            assert time.monotonic() < deadline, "the orchestrator in the image never set 90/10 and passed"
            time.sleep(0.5)
        state = stored_state(cluster)
        assert state["phase"] == "progressing" and state["step_index"] == 0, (
            state["phase"],
            state["step_index"],
        )
        assert state["holder"]["pod"] == pod_name  # the Job's pod name, from the downward API
    finally:
        logs = engine.run("logs", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        engine.run("kill", "--signal", "KILL", name, check=False)
        engine.run("rm", "--force", name, check=False)
    assert route_weights(cluster, NAMESPACE) == (90, 10)  # killed mid-step: the route stays where it was

    rollback = run_container(
        engine,
        container["image"],
        *container["command"],
        "rollback",
        "--kube-namespace",
        NAMESPACE,
        "--release",
        RELEASE,
        "--reason",
        "orchestrator pod lost",
        "--who",
        "toolkit-image-test",
        options=options,
    )
    print(rollback.stdout[-3000:], rollback.stderr[-3000:])
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    assert route_weights(cluster, NAMESPACE) == (100, 0)
    replicas = cluster.kubectl(
        "get", "deployment", f"{FULL}-canary", "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "0"
    state = stored_state(cluster)
    assert state["phase"] == "aborted"
    assert [e.get("who") for e in state["events"] if e["kind"] == "rollback"] == ["toolkit-image-test"]
