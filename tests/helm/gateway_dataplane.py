"""A real Gateway API data plane for the k8s tier: Traefik (built by tools/traefik/build.sh) running out of
cluster against the local API server, routing to real embedded backends by the chart's HTTPRoute.

What stands in for what: kwok's pods serve nothing and their IPs are not reachable, so the arms'
Deployments are scaled to zero and each arm's real backend process (its own loopback address, the
environment the chart gives the server container) is listed in an EndpointSlice of ours for the arm's
Service (`addressType: FQDN`: the API server refuses loopback IPs in IPv4 slices). That stands in for the
kubelet and the EndpointSlice controller; everything else is as the chart renders it (Services,
HTTPRoute, per-backendRef `x-canary-arm` filters, weights). Traefik runs as docs/helm.md tells a Traefik
installation serving this chart to run: `--experimental.fastProxy` (without it Traefik cuts some streams
after their first token). Prometheus scrapes the backends with the labels the chart's PodMonitor gives
them (namespace, pod, container, arm) and Traefik's own metrics; the backends' process series stand in
for cAdvisor and kube-state-metrics, which need a kubelet.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cluster_series import FULL, demo_sized, install_release
from helm_chart_render import CHART, RELEASE, ROOT

from backend.config import bucket_args
from backend.metrics import LatencyBuckets, geometric_buckets
from gates.config import DEFAULT_GATE_FILE
from infra.net import free_port, wait_http_ok
from infra.prometheus import PrometheusServer, static_scrape_config
from rollout.local_stack import ArmSpec, LoadSpec, start_loadtest
from rollout.processes import ProcessRef, is_alive, spawn_detached, terminate

TRAEFIK = ROOT / ".cache" / "traefik" / "bin" / "traefik"
CONTROLLER = "traefik.io/gateway-controller"
GATEWAY = "canary-gateway"
ADDRESSES = {"baseline": "127.0.0.2", "canary": "127.0.0.3"}
# Pod names as the Deployments' pods would have them (`<deployment>-<template hash>-<suffix>`), so the
# gates' per-arm pod regexes select exactly one arm.
PODS = {arm: f"{FULL}-{arm}-5d4f8b6c9-x7k2p" for arm in ADDRESSES}
# Latency buckets 4% apart over every latency these backends show (sglang's `--bucket-*` flags, what a user
# gives through `server.extraArgs`): on sglang's defaults a relative P99 cannot pass (docs/gates.md).
FINE_LATENCY_BUCKETS = LatencyBuckets(
    ttft=geometric_buckets(0.01, 10.0, 1.04),
    itl=geometric_buckets(0.001, 2.0, 1.04),
    e2e=geometric_buckets(0.02, 20.0, 1.04),
)
# The demo load of the local profiles: small images and few output tokens, for CPU-only backends.
LOAD_ARGS = ("--max-tokens", "8", "--image-sizes", "448x448")


@dataclass
class DataPlane:
    namespace: str
    gateway_url: str
    traefik: ProcessRef
    backends: dict[str, str]  # arm -> URL
    processes: dict[str, ProcessRef]
    prometheus: PrometheusServer
    workdir: Path
    loads: list[dict[str, Any]] = field(default_factory=list)

    def get(self, path: str = "/v1/models", timeout_s: float = 10.0) -> tuple[int, str | None]:
        """One request through the gateway: (status, the arm that served it)."""
        request = urllib.request.Request(self.gateway_url + path)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                resp.read()
                return resp.status, resp.headers.get("x-canary-arm")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("x-canary-arm")

    def set_faults(self, arm: str, **faults: float) -> None:
        """Switch rehearsal faults of one arm's backend (leak, extra latency) at run time."""
        body = json.dumps(faults).encode()
        request = urllib.request.Request(
            self.backends[arm] + "/rehearsal/faults",
            data=body,
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200

    def start_load(self, name: str, rate: float, seed: int = 1) -> dict[str, Any]:
        """A fresh Locust at `rate` req/s (Poisson) through the gateway, returned as soon as it started:
        whatever follows (a rollout's first weight change) may land on its first requests. Its per-request
        JSONL names each arm."""
        load = start_loadtest(
            self.gateway_url, LoadSpec(rate=rate, seed=seed, extra_args=LOAD_ARGS), self.workdir / name
        )
        self.loads.append(load)
        return load

    def first_request_back(self, load: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait for the first request of `load` to come back; that request's record."""
        jsonl, deadline = Path(load["requests_jsonl"]), time.monotonic() + timeout_s
        while not (jsonl.exists() and jsonl.read_text().strip()):
            if time.monotonic() > deadline or not is_alive(ProcessRef.from_dict(load["process"])):
                raise AssertionError(f"no load through the gateway after {timeout_s:.0f} s: {load['log']}")
            time.sleep(0.01)
        return json.loads(jsonl.read_text().splitlines()[0])

    def stop_load(self, load: dict[str, Any]) -> list[dict[str, Any]]:
        """Stop Locust (it writes its summary on SIGTERM); every request it made."""
        terminate(ProcessRef.from_dict(load["process"]), timeout_s=30.0)
        lines = Path(load["requests_jsonl"]).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def _traefik_args(cluster, workdir: Path, ports: dict[str, int], crd: bool = False) -> list[str]:
    """Traefik against the local API server: its Gateway API provider, and with `crd` its CRD provider too
    (TraefikServices, which an HTTPRoute can name as a backend: Argo Rollouts' Traefik router)."""
    token = workdir / "token"
    token.write_text(cluster.token)  # no trailing newline: Traefik sends the file's bytes as the token
    api = {
        "endpoint": cluster.server,
        "token": token,
        "certauthfilepath": cluster.workdir / "pki" / "apiserver.crt",
    }
    providers = ["kubernetesgateway", *(["kubernetescrd"] if crd else [])]
    return [
        str(TRAEFIK),
        *(f"--entrypoints.{name}.address=127.0.0.1:{port}" for name, port in ports.items()),
        "--ping=true",
        "--ping.entrypoint=ping",
        "--metrics.prometheus=true",
        "--metrics.prometheus.entrypoint=metrics",
        # Writes each request whole before reading the response: Go's HTTP/1 proxy otherwise races the
        # server side's close of the request body and cuts some streams (docs/helm.md).
        "--experimental.fastProxy=true",
        *(f"--providers.{p}=true" for p in providers),
        *(f"--providers.{p}.{key}={value}" for p in providers for key, value in api.items()),
        "--providers.kubernetesgateway.statusaddress.ip=127.0.0.1",
        # Apply a route change as soon as it is seen (the default waits 2 s between provider events).
        "--providers.providersthrottleduration=0s",
        "--log.level=INFO",
        # Nothing outside this machine: no release check, no usage statistics.
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
    ]


def gateway_manifest(namespace: str, port: int) -> str:
    """A GatewayClass for Traefik and a Gateway whose HTTP listener is Traefik's `web` entry point."""
    objects = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "traefik"},
            "spec": {"controllerName": CONTROLLER},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": namespace},
            "spec": {
                "gatewayClassName": "traefik",
                "listeners": [
                    {
                        "name": "web",
                        "protocol": "HTTP",
                        "port": port,
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def endpoint_slice(namespace: str, arm: str, port: int) -> dict[str, Any]:
    """The arm Service's endpoints: its backend process, as a kubelet would report a ready pod."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{FULL}-{arm}-local",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": f"{FULL}-{arm}",
                "endpointslice.kubernetes.io/managed-by": "k8s-tier.sglang-vlm-canary",
            },
        },
        "addressType": "FQDN",
        "endpoints": [{"addresses": [ADDRESSES[arm]], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def scrape_configs(namespace: str, backends: dict[str, str], traefik_metrics: str) -> list[dict[str, Any]]:
    """Each backend with the labels the chart's PodMonitor attaches (arm from the pod's component label),
    and the gateway's own metrics (per-service request counters by code)."""
    return [
        static_scrape_config(
            f"{namespace}-{arm}",
            [url.removeprefix("http://")],
            labels={"namespace": namespace, "pod": PODS[arm], "container": "sglang", "arm": arm},
        )
        for arm, url in backends.items()
    ] + [static_scrape_config("traefik", [traefik_metrics])]


def server_env(cluster, namespace: str, arm: str) -> dict[str, str]:
    """The plain-value environment the chart gives the arm's server container (e.g. its keep-alive)."""
    deployment = json.loads(
        cluster.kubectl("get", "deployment", f"{FULL}-{arm}", "-n", namespace, "-o", "json").stdout
    )
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "sglang"]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def tier_gate_file(directory: Path, *, without: tuple[str, ...] = ()) -> Path:
    """The packaged gates in the `kubernetes` profile, with the backends' process series in place of
    cAdvisor/kube-state-metrics (no kubelet here), the local demo's harms and absolute latency bounds for
    CPU-only backends (`demo_sized`), a memory-leak warm-up and sampling that fit a step, and minimum
    sample counts a 10% step at this tier's rate reaches in about a minute; the gates named in `without`
    are left out."""
    document = demo_sized(yaml.safe_load(DEFAULT_GATE_FILE.read_text()))
    pods = 'namespace="${namespace}",pod=~"${pod_regex}"'
    kubernetes = {
        "cpu_utilisation": {
            "value": f"sum(rate(backend_process_cpu_seconds_total{{{pods}}}[${{window}}]))"
            f" / max(backend_cpu_allotted_cores{{{pods}}})"
        },
        "memory_leak": {"memory": f"sum by (pod) (backend_process_resident_memory_bytes{{{pods}}})"},
    }
    sizing: dict[str, dict[str, Any]] = {
        "latency_e2e_p99": {"min_samples": 100},
        "latency_ttft_p99": {"min_samples": 100},
        "latency_itl_p99": {"min_samples": 100},
        "error_rate": {"min_samples": 100},
        # The warm-up leaves out the rise while in-flight work settles after the step starts (a slow
        # canary holds more requests, and their buffers, at once: a level, not a leak).
        "memory_leak": {"warmup_seconds": 30, "step_seconds": 2, "min_points": 10},
    }
    for gate in document["gates"]:
        for role, query in kubernetes.get(gate["name"], {}).items():
            gate["queries"][role]["kubernetes"] = query
        gate.update(sizing.get(gate["name"], {}))
    document["gates"] = [g for g in document["gates"] if g["name"] not in without]
    path = directory / "gates.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextlib.contextmanager
def data_plane(cluster, helm, namespace: str, workdir: Path) -> Iterator[DataPlane]:
    """The chart's release in `namespace` behind a Traefik Gateway, with one real backend per arm."""
    if not TRAEFIK.exists():
        raise FileNotFoundError(f"{TRAEFIK} is missing: `make test` builds it (tools/traefik/build.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("web", "ping", "metrics")}
    processes: dict[str, ProcessRef] = {}
    prometheus: PrometheusServer | None = None
    try:
        install_release(cluster, helm, CHART, namespace, f"route.parentRefs[0].name={GATEWAY}")
        for arm in ADDRESSES:  # kwok's pods serve nothing: the real backends below take their place
            cluster.kubectl("scale", "deployment", f"{FULL}-{arm}", "-n", namespace, "--replicas", "0")
        cluster.kubectl("apply", "-f", "-", input_text=gateway_manifest(namespace, ports["web"]))
        backends = {}
        for arm, address in ADDRESSES.items():
            port = free_port(address)
            # Two allotted cores each: the CPU gate judges a share a 2-core machine can give at 100%.
            spec = ArmSpec(
                arm=arm,
                mm_input_mode="sharded",
                tp_size=1,
                cpu_cores=2.0,
                extra_args=(f"--host={address}", *bucket_args(FINE_LATENCY_BUCKETS)),
            )
            processes[arm] = spawn_detached(
                spec.command_line(port),
                log_path=workdir / f"{arm}.log",
                env=server_env(cluster, namespace, arm),
            )
            backends[arm] = f"http://{address}:{port}"
            cluster.kubectl("apply", "-f", "-", input_text=json.dumps(endpoint_slice(namespace, arm, port)))
        processes["traefik"] = spawn_detached(
            _traefik_args(cluster, workdir, ports), log_path=workdir / "traefik.log"
        )
        wait_http_ok(
            f"http://127.0.0.1:{ports['ping']}/ping", 60, alive=lambda: is_alive(processes["traefik"])
        )
        for arm, url in backends.items():
            wait_http_ok(url + "/ready", 180, interval_s=0.5, alive=lambda ref=processes[arm]: is_alive(ref))
        prometheus = PrometheusServer(
            scrape_configs(namespace, backends, f"127.0.0.1:{ports['metrics']}"), scrape_interval_s=1.0
        ).start()
        plane = DataPlane(
            namespace=namespace,
            gateway_url=f"http://127.0.0.1:{ports['web']}",
            traefik=processes["traefik"],
            backends=backends,
            processes=processes,
            prometheus=prometheus,
            workdir=workdir,
        )
        _wait_routed(plane, cluster)
        yield plane
    finally:
        if prometheus is not None:
            prometheus.stop()
        for ref in processes.values():
            terminate(ref)
        helm(cluster, "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m")


def _wait_routed(plane: DataPlane, cluster, timeout_s: float = 60.0) -> None:
    """Until Traefik has accepted the route and serves it (the baseline answers through the gateway)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = plane.get()
            if last == (200, "baseline"):
                return
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    log = (plane.workdir / "traefik.log").read_text()[-3000:]
    route = cluster.kubectl("get", "httproute", FULL, "-n", plane.namespace, "-o", "yaml", check=False).stdout
    raise AssertionError(f"the gateway never served the route ({last}):\n{route[-3000:]}\n{log}")
