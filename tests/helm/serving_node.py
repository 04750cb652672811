"""The chart's server pods serving for real: a control plane with a real node (containerd + kubelet,
tools/k8s/node.py), the release installed through helm with the loopback post-renderer
(tools/k8s/loopback_pods.py), Traefik routing the chart's HTTPRoute to the pods, and a real Prometheus
scraping what a cluster's collectors export: the pods through the chart's PodMonitor (as the Prometheus
Operator would configure it), the kubelet's cAdvisor and kube-state-metrics.

What stands in for what (docs/helm.md): CPU instead of GPUs (the embedded SGLang-compatible backend in
place of `sglang.launch_server`, from the checkout's virtualenv mounted into the toolkit image), one
node, per-pod loopback addresses instead of a pod network (tools/k8s/loopback_network.py writes the
Services' EndpointSlices and Prometheus's pod targets), and the PodMonitor turned into scrape jobs by
`podmonitor_scrape_configs` instead of the Operator.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cluster_series import gate_file_for_served_pods
from gateway_dataplane import (
    FINE_LATENCY_BUCKETS,
    GATEWAY,
    LOAD_ARGS,
    _traefik_args,
    gateway_manifest,
)
from helm_chart_render import CHART, RELEASE, ROOT

from backend.config import bucket_args
from gates.__main__ import main as gates_main
from infra.net import free_port, wait_http_ok
from infra.prometheus import PrometheusServer, static_scrape_config
from rollout.local_stack import LoadSpec, start_loadtest
from rollout.processes import ProcessRef, is_alive, spawn_detached, terminate

sys.path.insert(0, str(ROOT / "tools" / "k8s"))
import cluster as cluster_tool  # noqa: E402
import loopback_network  # noqa: E402
import loopback_pods  # noqa: E402
import node as node_tool  # noqa: E402

TOOLKIT_IMAGE = "localhost/sglang-vlm-canary/toolkit"
ARMS = ("baseline", "canary")


def release_values(image: str) -> dict[str, Any]:
    """The chart's values for CPU-only server pods on a 2-core machine (one rank, one core at most), the
    PodMonitor instead of scrape annotations, no orchestrator Job (the test runs it), the servers' latency
    buckets 4% apart (docs/gates.md), and `image` for both arms."""
    repository, tag = image.rsplit(":", 1)
    return {
        "server": {
            "tpSize": 1,
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "3Gi"},
            },
            "shmSizeLimit": "1Gi",
            "extraArgs": list(bucket_args(FINE_LATENCY_BUCKETS)),
            "podDisruptionBudget": {"enabled": False},
        },
        "arms": {
            arm: {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}} for arm in ARMS
        },
        "monitoring": {"scrapeAnnotations": False, "podMonitor": {"enabled": True, "interval": "5s"}},
        "orchestrator": {"enabled": False},
        "route": {"parentRefs": [{"name": GATEWAY}]},
    }


def toolkit_image() -> str:
    """The toolkit image `make test` builds (tools/images.py), as podman stores it."""
    out = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", TOOLKIT_IMAGE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    if not out:
        raise FileNotFoundError(
            f"no {TOOLKIT_IMAGE} image: `make test` builds it (tools/images.py build toolkit)"
        )
    return sorted(out)[0]


@dataclass
class ServingRelease:
    cluster: Any
    node: Any
    namespace: str
    gateway_url: str
    prometheus: PrometheusServer
    workdir: Path

    def pods(self, arm: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", f"app.kubernetes.io/component={arm}", "-o", "json"
        ).stdout
        return json.loads(out)["items"]

    def pod_url(self, pod: dict[str, Any]) -> str:
        address = loopback_pods.pod_address(pod["metadata"]["namespace"], pod["metadata"]["name"])
        return f"http://{address}:30000"

    def set_faults(self, arm: str, **faults: float) -> None:
        """Switch rehearsal faults (leak, extra latency) in every pod of one arm, at their own addresses."""
        for pod in self.pods(arm):
            request = urllib.request.Request(
                self.pod_url(pod) + "/rehearsal/faults",
                data=json.dumps(faults).encode(),
                method="POST",
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200

    def start_load(self, name: str, rate: float, seed: int = 1) -> dict[str, Any]:
        return start_loadtest(
            self.gateway_url, LoadSpec(rate=rate, seed=seed, extra_args=LOAD_ARGS), self.workdir / name
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {pod['metadata']['name']}\n{self.node.container_log(self.namespace, pod['metadata']['name'], 'sglang')[-2000:]}"
            for arm in ARMS
            for pod in self.pods(arm)
        )


def _helm(cluster, *args: str) -> None:
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(cluster.workdir / "helm"),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [str(ROOT / ".cache" / "bin" / "helm"), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"


def _wait_ready(release: ServingRelease, arms: tuple[str, ...], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = {arm: [p for p in release.pods(arm) if loopback_network._ready(p)] for arm in arms}
        if all(ready.values()):
            return
        time.sleep(1)
    raise AssertionError(f"server pods not ready after {timeout_s:.0f}s:\n{release.logs()}")


def _wait_routed(release: ServingRelease, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(release.gateway_url + "/v1/models", timeout=5) as resp:
                last = (resp.status, resp.headers.get("x-canary-arm"))
                if last[0] == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(
        f"the gateway never served the release ({last}):\n{(release.workdir / 'traefik.log').read_text()[-3000:]}"
    )


@contextlib.contextmanager
def serving_release(
    workdir: Path,
    namespace: str,
    *sets: str,
    arms: tuple[str, ...] = ARMS,
    routed: bool = True,
    traefik_crds: bool = False,
) -> Iterator[ServingRelease]:
    """The chart installed in `namespace` on a real node, behind Traefik, scraped by a real Prometheus;
    ready once the pods of `arms` are, and (`routed`) the chart's route serves through the gateway.
    `traefik_crds`: the traefik.io CRDs installed and Traefik's CRD provider on (TraefikServices)."""
    image = toolkit_image()
    workdir.mkdir(parents=True, exist_ok=True)
    traefik: ProcessRef | None = None
    prometheus: PrometheusServer | None = None
    network = None
    controllers = ("*", "-endpointslice-controller")
    with cluster_tool.running(workdir / "cluster", nodes=(), controllers=controllers) as cluster:
        node = node_tool.start_node(cluster, workdir / "node", images=[image])
        try:
            network = loopback_network.LoopbackNetwork(cluster.kubeconfig, workdir / "pods.json").start()
            cluster.create_namespace(namespace)
            ports = {name: free_port() for name in ("web", "ping", "metrics")}
            cluster.kubectl("apply", "-f", "-", input_text=gateway_manifest(namespace, ports["web"]))
            if traefik_crds:
                subprocess.run(["bash", str(ROOT / "tools" / "traefik" / "crds.sh")], check=True, timeout=600)
                cluster.kubectl("apply", "--server-side", "-f", str(ROOT / ".cache" / "traefik" / "crds"))
            traefik = spawn_detached(
                _traefik_args(cluster, workdir, ports, crd=traefik_crds), log_path=workdir / "traefik.log"
            )
            wait_http_ok(f"http://127.0.0.1:{ports['ping']}/ping", 60, alive=lambda: is_alive(traefik))
            values_file = workdir / "values.yaml"
            values_file.write_text(yaml.safe_dump(release_values(image)))
            _helm(
                cluster,
                "install",
                RELEASE,
                str(CHART),
                "-n",
                namespace,
                "-f",
                str(values_file),
                *(arg for value in sets for arg in ("--set", value)),
                "--post-renderer",
                sys.executable,
                "--post-renderer-args",
                str(ROOT / "tools" / "k8s" / "loopback_pods.py"),
                "--post-renderer-args",
                "post-render",
            )
            (podmonitor,) = json.loads(
                cluster.kubectl("get", "podmonitor", "-n", namespace, "-o", "json").stdout
            )["items"]
            scrape = [
                *loopback_network.podmonitor_scrape_configs(podmonitor, network.sd_file),
                {
                    **static_scrape_config("cadvisor", ["127.0.0.1:10250"]),
                    "scheme": "https",
                    "metrics_path": "/metrics/cadvisor",
                    "tls_config": {"insecure_skip_verify": True},
                    "honor_labels": True,
                },
                {
                    **static_scrape_config(
                        "kube-state-metrics",
                        [node.kube_state_metrics_url.removeprefix("http://").removesuffix("/metrics")],
                    ),
                    "honor_labels": True,
                },
                static_scrape_config("traefik", [f"127.0.0.1:{ports['metrics']}"]),
            ]
            prometheus = PrometheusServer(scrape, scrape_interval_s=5.0).start()
            release = ServingRelease(
                cluster, node, namespace, f"http://127.0.0.1:{ports['web']}", prometheus, workdir
            )
            _wait_ready(release, arms)
            if routed:
                _wait_routed(release)
            yield release
        finally:
            if prometheus is not None:
                prometheus.stop()
            if traefik is not None:
                terminate(traefik)
            if network is not None:
                network.stop()
            node.stop()


def controller_target(
    workdir: Path, namespace: str, traefik_crds: bool = False
) -> contextlib.AbstractContextManager[ServingRelease]:
    """The chart as a progressive-delivery controller's target, as a user would install it: the baseline
    Deployment only (the controller makes the candidate from a new revision of it), no route of its own
    (the controller routes), two cores allowed per pod; not routed until the controller's routing exists."""
    return serving_release(
        workdir,
        namespace,
        "arms.canary.enabled=false",
        "route.enabled=false",
        "server.resources.limits.cpu=2",
        arms=("baseline",),
        routed=False,
        traefik_crds=traefik_crds,
    )


SLOW_ARGS = ("--fault-extra-latency-ms", "300")  # a slow candidate: 300 ms more per request
# A leaking candidate: each request retains 512 KiB, ~48 MiB/min at 10% of 16 req/s, six times the demo's
# harm (8 MiB/min per pod), ~240 MiB/min at 50%: a candidate that reaches 50% meets the pods' 3 GiB limit
# within about ten minutes there (a restart, whose young pod the leak check then waits for).
LEAK_ARGS = ("--fault-leak-kib-per-request", "512")
# The controller traffic tests' candidates, in this order, each a new revision of the last promoted one:
# its name, its revision and its rehearsal faults; vanished last (Prometheus stays stopped).
SCENARIOS = (("good", "2", ()), ("slow", "3", SLOW_ARGS), ("leaking", "4", LEAK_ARGS), ("vanished", "5", ()))
SCENARIOS_ENV = "CONTROLLER_SCENARIOS"


def chosen_scenarios() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """SCENARIOS, or those named in $CONTROLLER_SCENARIOS (comma-separated, run in SCENARIOS' order): one
    Flagger scenario alone takes well under an hour, the four hours."""
    names = [n.strip() for n in os.environ.get(SCENARIOS_ENV, "").split(",") if n.strip()]
    unknown = set(names) - {name for name, _, _ in SCENARIOS}
    if unknown:
        raise ValueError(f"{SCENARIOS_ENV}: unknown {sorted(unknown)}; known: {[s[0] for s in SCENARIOS]}")
    return tuple(s for s in SCENARIOS if not names or s[0] in names)


def exported_gates(
    directory: Path, fmt: str, prometheus_url: str, namespace: str, rate: float
) -> list[dict[str, Any]]:
    """`python -m gates export --format fmt` as shipped, timing sized by `--rate`, for the served pods'
    gate file (`gate_file_for_served_pods`)."""
    out = directory / f"{fmt}.yaml"
    gate_file = gate_file_for_served_pods(directory)
    argv = ["export", "--format", fmt, "--profile", "kubernetes", "--gate-file", str(gate_file)]
    argv += [
        "--prometheus-address",
        prometheus_url,
        "--namespace",
        namespace,
        "--rate",
        str(rate),
        "-o",
        str(out),
    ]
    assert gates_main(argv) == 0
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def new_revision(
    cluster, namespace: str, deployment: str, revision: str, extra_args: Sequence[str] = ()
) -> None:
    """A new revision of a Deployment's server container: `CANARY_REVISION=revision`, its rehearsal faults
    `extra_args` in place of the previous revision's (each `--fault-*` option is followed by its value)."""
    template = json.loads(
        cluster.kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json").stdout
    )
    containers = template["spec"]["template"]["spec"]["containers"]
    (index,) = [i for i, c in enumerate(containers) if c["name"] == "sglang"]
    env = [e for e in containers[index].get("env", []) if e["name"] != "CANARY_REVISION"]
    args = list(containers[index].get("args", []))
    faults = {i for i, a in enumerate(args) if a.startswith("--fault-")}
    kept = [a for i, a in enumerate(args) if i not in faults and i - 1 not in faults]
    path = f"/spec/template/spec/containers/{index}"
    patch = [
        {"op": "replace", "path": f"{path}/args", "value": [*kept, *extra_args]},
        {
            "op": "replace",
            "path": f"{path}/env",
            "value": [*env, {"name": "CANARY_REVISION", "value": revision}],
        },
    ]
    cluster.kubectl(
        "patch", "deployment", deployment, "-n", namespace, "--type", "json", "-p", json.dumps(patch)
    )
