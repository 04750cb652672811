"""Per-arm series named as a cluster exports them (cAdvisor per pod and container, kube-state-metrics
limits, sglang's own metrics with the `arm` label the chart's monitors add), from the embedded stack's
synthetic series; shared by the gate scenarios and the orchestrator end-to-end tests.
"""

from __future__ import annotations

import time
from typing import Any

from helm_chart_render import RELEASE

from rollout.cluster import ClusterTarget

FULL = f"{RELEASE}-sglang-vlm-canary"


def release_target(namespace: str, prometheus_url: str = "http://unused") -> ClusterTarget:
    """The orchestrator's view of the test release (names derived from the chart's, as from a laptop)."""
    return ClusterTarget.resolve(namespace=namespace, release=RELEASE, prometheus_url=prometheus_url, env={})


def pod_regex(arm: str) -> str:
    """The pods of one arm's Deployment, as the orchestrator derives it (one place: rollout.cluster)."""
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
