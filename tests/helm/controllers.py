"""Argo Rollouts and Flagger (built by tools/install-argo-rollouts.sh and tools/install-flagger.sh) run out
of cluster against the k8s tier's control plane, and the scenario data both judge: a real Prometheus
holding per-arm series for the controllers' own pods, and our evaluator run on the same window with the
same arm selection as the export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cluster_series import as_cluster_series
from helm_chart_render import ROOT

from gates.config import GateConfig
from gates.evaluate import evaluate
from gates.export import not_exported
from gates.record import Evaluation
from infra.net import free_port
from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from testkit.processes import serving
from testkit.synthetic_arms import ArmBehaviour, arm_series

ARGO = ROOT / ".cache" / "argo-rollouts"
FLAGGER = ROOT / ".cache" / "flagger"
CPU_LIMIT = 4.0  # cores, the test pods' limit (kube_pod_container_resource_limits)
SCRAPE_S = 5.0


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout_s: float,
    interval_s: float = 1.0,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """Poll until `check()` returns something truthy; the assertion names `what` and the last value seen
    (or what `describe()` says then)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    seen = describe() if describe is not None else last
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last seen: {seen!r}")


def get(cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def get_all(cluster, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout
    return json.loads(out)["items"]


def apply(cluster, *documents: Mapping[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)}),
    )


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def established(cluster, *crds: str) -> None:
    # `kubectl wait` right after an apply fails on a CRD whose status is not written yet
    jsonpath = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'

    def is_established(crd: str) -> bool:
        return cluster.kubectl("get", "crd", crd, "-o", jsonpath, check=False).stdout == "True"

    for crd in crds:
        wait_for(f"CRD {crd} established", functools.partial(is_established, crd), 60)


def require(binary: Path, script: str) -> None:
    # Idempotent: returns at once when the pinned build is there (as `make test` ensures).
    subprocess.run(["bash", str(ROOT / "tools" / script)], check=True, timeout=3600)
    assert binary.is_file(), f"{binary} missing after tools/{script}"


@contextlib.contextmanager
def argo_rollouts(cluster, workdir: Path) -> Iterator[Path]:
    """The Argo Rollouts controller, cluster-wide, its CRDs installed; yields its log."""
    require(ARGO / "bin" / "rollouts-controller", "install-argo-rollouts.sh")
    cluster.kubectl("apply", "--server-side", "-f", str(ARGO / "crds"))
    established(cluster, "rollouts.argoproj.io", "analysistemplates.argoproj.io", "analysisruns.argoproj.io")
    healthz = free_port()
    argv = [
        str(ARGO / "bin" / "rollouts-controller"),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--healthzPort",
        str(healthz),
        "--metricsPort",
        str(free_port()),
        "--leader-elect=false",
        "--loglevel",
        "info",
    ]
    log = workdir / "argo-rollouts.log"
    with serving(argv, f"http://127.0.0.1:{healthz}/healthz", log, timeout_s=90, grace_s=15):
        yield log


@contextlib.contextmanager
def flagger(cluster, workdir: Path, metrics_server: str) -> Iterator[Path]:
    """Flagger with the Gateway API v1 router, cluster-wide, its CRDs installed; yields its log."""
    require(FLAGGER / "bin" / "flagger", "install-flagger.sh")
    cluster.kubectl("apply", "--server-side", "-f", str(FLAGGER / "crds"))
    established(cluster, "canaries.flagger.app", "metrictemplates.flagger.app")
    port = free_port()
    argv = [
        str(FLAGGER / "bin" / "flagger"),
        "-kubeconfig",
        str(cluster.kubeconfig),
        "-mesh-provider",
        "gatewayapi:v1",
        "-metrics-server",
        metrics_server,
        "-port",
        str(port),
        "-log-level",
        "info",
        "-enable-config-tracking=false",
    ]
    log = workdir / "flagger.log"
    with serving(argv, f"http://127.0.0.1:{port}/healthz", log, timeout_s=90, grace_s=15):
        yield log


# The analysis args a Rollout gives the exported templates: its namespace and its arms' pod-template hashes.
ARGO_ANALYSIS_ARGS = [
    {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "baseline-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
    {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
]
ARGO_PHASE = {"pass": "Successful", "fail": "Failed", "inconclusive": "Inconclusive"}  # our verdict's phase
ARGO_WORST = ("Successful", "Inconclusive", "Error", "Failed")  # phases, best first (Error: no answer)


def gate_of(config: GateConfig, check: str) -> str:
    """The gate an exported check (metric or template name suffix like `latency-e2e-p99-ratio`) belongs to."""
    return next(g.name for g in config.gates if check.startswith(g.name.replace("_", "-") + "-"))


# The target pods' one container (kwok runs no image), at the CPU limit the scenario series are sized to.
CONTAINER: dict[str, Any] = {
    "name": "sglang",
    "image": "sglang-vlm:baseline",
    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": f"{CPU_LIMIT:g}"}},
}


def new_candidate(cluster, kind: str, name: str, namespace: str) -> None:
    """A new revision of the target (a Rollout or a Deployment): its container runs the candidate build."""
    patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "sglang-vlm:candidate"}
    ]
    cluster.kubectl("-n", namespace, "patch", kind, name, "--type=json", "-p", json.dumps(patch))


def flagger_canary(
    target: str, namespace: str, gateway: str, analysis: Mapping[str, Any], **service: Any
) -> dict[str, Any]:
    """A Flagger Canary of the Deployment `target` routed by the Gateway API v1 `gateway` (in its namespace);
    `service` adds to its service (the port is 30000)."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": target, "namespace": namespace},
        "spec": {
            "provider": "gatewayapi:v1",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "progressDeadlineSeconds": 600,
            "service": {"port": 30000, **service, "gatewayRefs": [{"name": gateway, "namespace": namespace}]},
            "analysis": analysis,
        },
    }


@dataclasses.dataclass(frozen=True)
class Arms:
    """One scenario's arms as the controller identifies them: the `arm` label value the scrape config
    writes (Argo: pod-template hash; Flagger: <target> / <target>-primary) and a real pod of each."""

    namespace: str
    label: Mapping[str, str]
    pod: Mapping[str, str]
    pod_regex: Mapping[str, str]


@contextlib.contextmanager
def scenario_prometheus(
    scenarios: Mapping[str, tuple[Arms, ArmBehaviour]],
    data_dir: Path,
    *,
    seed: int,
    past_s: float,
    future_s: float,
) -> Iterator[PrometheusServer]:
    """A real Prometheus holding each scenario's series from `past_s` before now to `future_s` after, for its
    real pods (Prometheus serves a sample once wall time reaches it, so the controllers' measurements at
    wall-clock time fall inside the span). A namespace not given has no series at all."""
    now = float(int(time.time()))
    series: list[Any] = []
    for index, (arms, canary) in enumerate(scenarios.values()):
        rng = np.random.default_rng(seed + index)
        for arm, behaviour in (("baseline", ArmBehaviour(rps=20.0)), ("canary", canary)):
            behaviour = dataclasses.replace(behaviour, allotted_cores=CPU_LIMIT)
            local = arm_series(arm, behaviour, now - past_s, now + future_s, SCRAPE_S, rng)
            series += as_cluster_series(arms.namespace, arms.label[arm], arms.pod[arm], CPU_LIMIT, local)
    backfill(openmetrics_text(series), data_dir)
    with PrometheusServer(data_dir=data_dir) as server:
        yield server


def judge_like_export(
    config: GateConfig, prometheus_url: str, arms: Arms, end: float, window_s: float
) -> Evaluation:
    """Our evaluator on the window a controller's measurement at `end` covered, reading the series the
    export reads: the packaged queries unchanged, with `pod_regex` set to the controller's pods (the one
    label contract: arms are selected by pod name); the gates no export carries are left out."""
    skipped = set(not_exported(config))
    return evaluate(
        dataclasses.replace(config, gates=tuple(g for g in config.gates if g.name not in skipped)),
        prometheus_url=prometheus_url,
        start=end - window_s,
        end=end,
        weights={"baseline": 50.0, "canary": 50.0},
        offered_rps=None,
        variables={"namespace": arms.namespace, "pod_regex": dict(arms.pod_regex)},
    )


def agreement(
    config: GateConfig,
    prometheus_url: str,
    window_s: float,
    judged: list[dict[str, Any]],
    arms_of: Callable[[dict[str, Any]], Arms],
) -> list[dict[str, Any]]:
    """Our evaluator beside each of a controller's judgements of a gate (`judged`: when, which gate, the
    controller's phase in Argo's words): the packaged queries on the window the controller read, with the
    pods it judged (`arms_of`), without hysteresis (the controller's own failure count applies it)."""
    evaluations: dict[tuple[float, tuple[Any, ...]], Evaluation] = {}  # one per judged window, not per gate
    rows = []
    for r in judged:
        arms = arms_of(r)
        key = (float(r["at"]), (arms.namespace, *sorted(arms.pod_regex.items())))
        if key not in evaluations:
            evaluations[key] = judge_like_export(config, prometheus_url, arms, float(r["at"]), window_s)
        verdict = evaluations[key].gate(r["gate"])
        rows.append(r | {"ours": verdict.raw_verdict.value, "our_reason": verdict.reason})
    return rows


def contradictions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the controller's phase and our verdict point opposite ways: a fail against a success. An
    inconclusive verdict of ours where the controller compares a point estimate, or a controller's Error
    (no answer), is no contradiction: docs/gates.md names the approximation."""
    return [r for r in rows if {r["phase"], ARGO_PHASE[r["ours"]]} == {"Successful", "Failed"}]


# What both exports are given to reach Prometheus through TokenGateway: a Secret holding the token and a
# tenant header (`python -m gates export --prometheus-secret --prometheus-header`).
AUTH_SECRET, AUTH_TOKEN, TENANT = "prometheus-auth", "s3cret-token", ("X-Scope-OrgID", "canary-gates")
AUTH_OPTIONS = ["--prometheus-secret", AUTH_SECRET, "--prometheus-header", f"{TENANT[0]}: {TENANT[1]}"]


def auth_secret(namespace: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AUTH_SECRET, "namespace": namespace},
        "stringData": {"token": token},
    }


class TokenGateway(http.server.ThreadingHTTPServer):
    """Stands in for what fronts a shared Prometheus in many clusters (kube-rbac-proxy, a managed
    service's gateway): a query reaches `upstream` only with `Authorization: Bearer AUTH_TOKEN` and the
    TENANT header; anything else is answered 401 and counted."""

    def __init__(self, upstream: str) -> None:
        self.accepted = self.refused = 0
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self, body: bytes | None) -> None:
                if (
                    self.headers.get("Authorization") != f"Bearer {AUTH_TOKEN}"
                    or self.headers.get(TENANT[0]) != TENANT[1]
                ):
                    gateway.refused += 1
                    self._answer(401, b"unauthorized", "text/plain")
                    return
                gateway.accepted += 1
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
                if body is not None:
                    request.add_header("Content-Type", self.headers.get("Content-Type", ""))
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        self._answer(
                            response.status, response.read(), response.headers.get("Content-Type", "")
                        )
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read(), exc.headers.get("Content-Type", ""))

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._relay(None)

            def do_POST(self) -> None:  # noqa: N802 - Prometheus' Go client queries by POST first
                self._relay(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def token_gateway(upstream: str) -> Iterator[TokenGateway]:
    gateway = TokenGateway(upstream)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        yield gateway
    finally:
        gateway.shutdown()
        gateway.server_close()
