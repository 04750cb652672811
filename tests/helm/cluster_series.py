"""Per-arm series named as a cluster exports them (cAdvisor per pod and container, kube-state-metrics
limits, sglang's own metrics with the `arm` label the chart's monitors add), from the embedded stack's
synthetic series; shared by the gate scenarios and the orchestrator end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helm_chart_render import CHART, RELEASE, ROOT, helm_on

from gates.config import DEFAULT_GATE_FILE
from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from rollout.plan import get_profile
from rollout.sites.cluster import ClusterTarget
from testkit.synthetic_arms import ArmBehaviour, arm_series

FULL = f"{RELEASE}-sglang-vlm-canary"


def release_target(namespace: str, prometheus_url: str = "http://unused") -> ClusterTarget:
    """The orchestrator's view of the test release (names derived from the chart's, as from a laptop)."""
    return ClusterTarget.resolve(namespace=namespace, release=RELEASE, prometheus_url=prometheus_url, env={})


def pod_regex(arm: str) -> str:
    """The pods of one arm's Deployment, as the orchestrator derives it (one place: rollout.sites.cluster)."""
    return release_target("any").pod_regex(arm)


def as_cluster_series(namespace: str, arm: str, pod: str, cpu_limit: float, series: list[Any]) -> list[Any]:
    """Rename one arm's embedded-stack series to what cAdvisor, kube-state-metrics and sglang export."""
    where = {"namespace": namespace, "pod": pod}
    container = {**where, "container": "sglang"}
    out: list[Any] = []
    cpu_by_time: dict[float, float] = {}
    for name, labels, points in series:
        if name.startswith("sglang:"):
            # The PodMonitor keeps sglang's labels and adds arm (from the pod label), namespace and pod.
            out.append((name, {**labels, **where, "arm": arm}, points))
        elif name == "backend_process_cpu_seconds_total":
            for t, v in points:  # cAdvisor counts the container, not each rank
                cpu_by_time[t] = cpu_by_time.get(t, 0.0) + v
        elif name == "backend_process_resident_memory_bytes":
            out.append(("container_memory_working_set_bytes", container, points))
            # The pod-level cgroup (container="") must be filtered out by the queries, or memory doubles.
            out.append(("container_memory_working_set_bytes", {**where, "container": ""}, points))
        elif name == "router_requests_total" and labels.get("code") != "200":
            out.append(("sglang:num_aborted_requests_total", {**where, "arm": arm}, points))
    times = sorted(cpu_by_time)
    out.append(("container_cpu_usage_seconds_total", container, [(t, cpu_by_time[t]) for t in times]))
    out.append(
        (
            "container_cpu_usage_seconds_total",
            {**where, "container": ""},
            [(t, cpu_by_time[t]) for t in times],
        )
    )
    out.append(
        (
            "kube_pod_container_resource_limits",
            {**container, "resource": "cpu", "unit": "core"},
            [(t, cpu_limit) for t in times],
        )
    )
    return out


def install_release(cluster, helm, chart, namespace: str, *sets: str) -> None:
    cluster.create_namespace(namespace)
    extra = [arg for s in sets for arg in ("--set", s)]
    helm(
        cluster,
        "install",
        RELEASE,
        str(chart),
        "-n",
        namespace,
        "-f",
        str(chart / "ci" / "default-values.yaml"),
        *extra,
    )


def release_pods(cluster, namespace: str, timeout_s: float = 90.0) -> tuple[dict[str, str], float]:
    """({arm: server pod name}, the canary container's CPU limit in cores) once both pods exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        pods = cluster.kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/component in (baseline,canary)",
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/component} {.metadata.name}\n{end}",
        ).stdout.split("\n")
        by_arm = dict(line.split() for line in pods if line.strip())
        if len(by_arm) == 2:
            break
        assert time.monotonic() < deadline, f"server pods not created in {namespace}: {pods}"
        time.sleep(0.5)
    limit = cluster.kubectl(
        "get",
        "deployment",
        f"{FULL}-canary",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].resources.limits.cpu}",
    ).stdout
    return by_arm, float(limit)


@contextlib.contextmanager
def installed_releases(cluster, helm, chart, namespaces) -> Iterator[dict[str, tuple[dict[str, str], float]]]:
    """The chart installed once per namespace; yields namespace -> (arm -> pod name, CPU limit)."""
    installed: list[str] = []
    try:
        for namespace in namespaces:
            install_release(cluster, helm, chart, namespace)
            installed.append(namespace)
        yield {namespace: release_pods(cluster, namespace) for namespace in namespaces}
    finally:
        for namespace in installed:
            helm(cluster, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m")


@contextlib.contextmanager
def backfilled_prometheus(
    releases: dict[str, tuple[dict[str, str], float]],
    canaries: dict[str, ArmBehaviour],
    data_dir: Path,
    *,
    seed: int,
    past_s: float = 30.0,
    future_s: float = 300.0,
    scrape_s: float = 1.0,
    rps: float = 80.0,
) -> Iterator[PrometheusServer]:
    """A real Prometheus holding each release's per-arm series from `past_s` before now to `future_s` after
    (Prometheus serves a sample once wall time reaches it, so a wall-clock run is judged inside the span)."""
    now = float(int(time.time()))
    series: list[Any] = []
    for index, (namespace, canary) in enumerate(canaries.items()):
        by_arm, cpu_limit = releases[namespace]
        rng = np.random.default_rng(seed + index)
        for arm, behaviour in (("baseline", ArmBehaviour(rps=rps)), ("canary", canary)):
            behaviour = ArmBehaviour(**{**behaviour.__dict__, "allotted_cores": cpu_limit})
            local = arm_series(arm, behaviour, now - past_s, now + future_s, scrape_s, rng)
            series += as_cluster_series(namespace, arm, by_arm[arm], cpu_limit, local)
    backfill(openmetrics_text(series), data_dir)
    with PrometheusServer(data_dir=data_dir) as server:
        yield server


def demo_sized(document: dict[str, Any]) -> dict[str, Any]:
    """A gate document with the local demo's harms and absolute latency bounds (the quick profile's gate
    overrides; of the memory gate's only its harm, not its sampling): the smallest harms the packaged
    gates must catch need minutes to hours of traffic at a test's rate before a healthy canary may pass
    (`python -m rollout plan`), and the embedded backends grow for minutes after each traffic step."""
    sizing = get_profile("quick").gate_overrides
    for gate in document["gates"]:
        if gate["name"] == "memory_leak":
            gate["leak_bytes_per_minute"] = sizing["memory_leak"]["leak_bytes_per_minute"]
        else:
            gate.update(sizing.get(gate["name"], {}))
    return document


def gate_file_without_memory_leak(directory: Path) -> Path:
    """The packaged gates (variables included, as in a copy of the defaults) without `memory_leak`: its 60 s
    warm-up and 20 points at 10 s cannot fit a seconds-long test window; every other gate with the demo's
    harms (`demo_sized`)."""
    document = demo_sized(yaml.safe_load(DEFAULT_GATE_FILE.read_text()))
    document["gates"] = [g for g in document["gates"] if g["name"] != "memory_leak"]
    path = directory / "gates.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def gate_file_for_served_pods(directory: Path) -> Path:
    """The packaged gates and queries with the local demo's harms and absolute latency bounds, which CPU pods
    on 2 cores force (`demo_sized`), and the packaged CPU sampling (30 s sub-windows fit cAdvisor scraped
    every 5 s; the local demo's 2 s do not): nothing else differs. For the tests whose pods serve under a
    real kubelet (serving_node.py)."""
    packaged = yaml.safe_load(DEFAULT_GATE_FILE.read_text())
    (cpu,) = [g for g in packaged["gates"] if g["name"] == "cpu_utilisation"]
    document = demo_sized(yaml.safe_load(DEFAULT_GATE_FILE.read_text()))
    for gate in document["gates"]:
        if gate["name"] == "cpu_utilisation":
            gate.update(step_seconds=cpu["step_seconds"], min_points=cpu["min_points"])
    path = directory / "gates.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def service_account_env(cluster, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a job holding the chart's orchestrator token in KUBECONFIG, and no settings of ours."""
    kubeconfig = cluster.service_account_kubeconfig(namespace, f"{FULL}-orchestrator", tmp_path / "sa")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLOUT_", "CI_GATE_", "GITHUB_"))}
    return env | {"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}


def route_weights(cluster, namespace: str) -> tuple[int, int]:
    route = json.loads(cluster.kubectl("get", "httproute", FULL, "-n", namespace, "-o", "json").stdout)
    refs = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
    return refs[f"{FULL}-baseline"], refs[f"{FULL}-canary"]


class RouteWatcher:
    """The (baseline, canary) weights the route really held, in order (polled as cluster admin once a second)."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.seen: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def canary_weights(self) -> list[int]:
        """The canary's weights in the order the route held them, repeats folded."""
        out: list[int] = []
        for _, canary in self.seen:
            if not out or out[-1] != canary:
                out.append(canary)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            weights = route_weights(self.cluster, self.namespace)
            if not self.seen or self.seen[-1] != weights:
                self.seen.append(weights)
            self._stop.wait(1.0)

    def __enter__(self) -> RouteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def wait_for_route(cluster, namespace: str, weights: tuple[int, int], proc: subprocess.Popen) -> None:
    """Wait (a minute at most) until the route holds `weights`, set by `proc`, which must keep running."""
    deadline = time.monotonic() + 60
    while route_weights(cluster, namespace) != weights:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, f"the route never held {weights[0]}/{weights[1]}"
        time.sleep(0.5)


def rollout_args(
    command: str, namespace: str, prometheus_url: str, gate_file: Path, reports: Path, *extra: str
):
    """`python -m rollout <command>` (run, ci-gate) in cluster mode on the test release in `namespace`."""
    return [
        sys.executable,
        "-m",
        "rollout",
        command,
        "--kube-namespace",
        namespace,
        "--release",
        RELEASE,
        "--prometheus-url",
        prometheus_url,
        "--gate-file",
        str(gate_file),
        "--reports-dir",
        str(reports),
        *extra,
    ]


def run_to_end(cmd: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run `cmd` from the repository root to its end; its output's tails printed."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


def rollout_fixtures(canaries: dict[str, ArmBehaviour], *, seed: int):
    """The module fixtures of a test module running the rollout against releases on the control plane:
    `releases` (the chart installed in each namespace of `canaries`, namespace -> canary behaviour),
    `prometheus` (their backfilled series, the first namespace's drawn with `seed`) and `gate_file`
    (`gate_file_without_memory_leak`). Bind them to those names in the module."""

    @pytest.fixture(scope="module")
    def releases(cluster):
        """The chart installed once per namespace: namespace -> (arm -> pod name, CPU limit)."""
        with installed_releases(cluster, helm_on, CHART, canaries) as pods:
            yield pods

    @pytest.fixture(scope="module")
    def prometheus(releases, tmp_path_factory):
        """A real Prometheus holding each release's backfilled per-arm series."""
        with backfilled_prometheus(releases, canaries, tmp_path_factory.mktemp("tsdb"), seed=seed) as server:
            yield server

    @pytest.fixture(scope="module")
    def gate_file(tmp_path_factory) -> Path:
        """The packaged gates without `memory_leak`, with the demo's harms."""
        return gate_file_without_memory_leak(tmp_path_factory.mktemp("gates"))

    return releases, prometheus, gate_file
