"""The real Flagger (Gateway API v1 router) runs `python -m gates export --format flagger` and
`--format flagger-analysis` on kwok pods, against a real Prometheus holding each scenario's series for
Flagger's own `<target>` and `<target>-primary` pods.

A confirm-traffic-increase webhook holds each Canary at weight 0 once its canary pods run, so the test
can read their names and backfill Prometheus before the first check. Then: good data steps the
HTTPRoute weights 10 -> 50 and promotes; a P99 regression halts at its first check and rolls back after
the analysis threshold; no data halts too and rolls back (Flagger has no inconclusive: a missing value is
a failed check); with Prometheus behind a token gateway, MetricTemplates exported with a Secret and a
tenant header promote a good canary, and with the Secret's token wrong every check fails and it rolls
back. Each halt names the first failing metric in the analysis order, which is the first metric whose
gate our evaluator fails on the same window.
"""

from __future__ import annotations

import calendar
import http.server
import json
import threading
import time
from typing import Any

import pytest
import yaml
from controllers import (
    AUTH_OPTIONS,
    AUTH_TOKEN,
    CONTAINER,
    Arms,
    apply,
    auth_secret,
    flagger,
    flagger_canary,
    gate_of,
    get,
    get_all,
    judge_like_export,
    log_tail,
    new_candidate,
    scenario_prometheus,
    token_gateway,
    wait_for,
)

from gates.__main__ import main as gates_main
from gates.config import load_gate_file
from gates.export import flagger_dialect
from infra.net import free_port
from testkit.synthetic_arms import ArmBehaviour

pytestmark = pytest.mark.k8s

TARGET = "sglang"
WINDOW, WINDOW_S = "10m", 600.0  # the leak gate: a 60 s warm-up, 20 points at 10 s and two collection cycles
SCENARIOS = {
    "flagger-good": ArmBehaviour(rps=20.0),
    "flagger-p99": ArmBehaviour(rps=20.0, p99_factor=1.6),
    "flagger-nodata": None,  # no series at all
    "flagger-auth": ArmBehaviour(rps=20.0),  # Prometheus behind a token gateway, the Secret's token right
    "flagger-auth-refused": ArmBehaviour(rps=20.0),  # ... and wrong
}
AUTH = {"flagger-auth": AUTH_TOKEN, "flagger-auth-refused": "not-the-token"}  # each namespace's Secret


class Hold(http.server.ThreadingHTTPServer):
    """A confirm-traffic-increase webhook: 403 (hold at the current weight) until released; records callers."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.callers: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.callers.add(json.loads(body or b"{}").get("namespace", ""))
                self.send_response(200 if server.released.is_set() else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


def export(tmp_path, fmt: str, namespace: str, prometheus: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{fmt}-{namespace}.yaml"
    argv = ["export", "--format", fmt, "--profile", "kubernetes", "--prometheus-address", prometheus]
    argv += ["--namespace", namespace, "--window", WINDOW, "--interval", "10s", "-o", str(out)]
    if namespace in AUTH and fmt == "flagger":
        argv += AUTH_OPTIONS
    assert gates_main(argv) == 0
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def manifests(tmp_path, namespace: str, hold_url: str) -> list[dict[str, Any]]:
    (block,) = export(tmp_path, "flagger-analysis", namespace, "http://unused")
    analysis = block["analysis"] | {
        "webhooks": [{"name": "hold", "type": "confirm-traffic-increase", "url": hold_url, "timeout": "5s"}]
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": TARGET, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": TARGET}},
                "template": {"metadata": {"labels": {"app": TARGET}}, "spec": {"containers": [CONTAINER]}},
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gateway", "namespace": namespace},
            "spec": {
                "gatewayClassName": "canary-tests",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            },
        },
        flagger_canary(TARGET, namespace, "gateway", analysis),
    ]


def canary_phase(cluster, namespace: str) -> str:
    return get(cluster, "canary", TARGET, namespace).get("status", {}).get("phase", "")


def route_weights(cluster, namespace: str) -> tuple[int, int] | None:
    routes = get_all(cluster, "httproutes", namespace)
    for route in routes:
        for rule in route["spec"]["rules"]:
            weights = {r["name"]: r.get("weight", 1) for r in rule.get("backendRefs", [])}
            if f"{TARGET}-primary" in weights and f"{TARGET}-canary" in weights:
                return weights[f"{TARGET}-primary"], weights[f"{TARGET}-canary"]
    return None


def held_arms(cluster, namespace: str, hold: Hold) -> Arms:
    """Wait for the canary's pods to run while the webhook holds it at weight 0; both arms' pods."""

    def ready() -> dict[str, str] | None:
        if namespace not in hold.callers:
            return None
        pods = {}
        for arm, app in (("baseline", f"{TARGET}-primary"), ("canary", TARGET)):
            items = [
                p
                for p in get_all(cluster, "pods", namespace, "-l", f"app={app}")
                if p["status"].get("phase") == "Running"
            ]
            if not items:
                return None
            pods[arm] = items[0]["metadata"]["name"]
        return pods

    pods = wait_for(f"{namespace}: canary pods running, held at weight 0", ready, 180)
    dialect = flagger_dialect(load_gate_file(None, profile="kubernetes"))
    label = {a: text.replace("{{ target }}", TARGET) for a, text in dialect.arm.items()}
    regex = {a: text.replace("{{ target }}", TARGET) for a, text in dialect.variables["pod_regex"].items()}
    return Arms(namespace, label, pods, regex)


class WeightWatcher(threading.Thread):
    """The (primary, canary) weights each route held, in order, polled once a second."""

    def __init__(self, cluster, namespaces) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespaces = cluster, list(namespaces)
        self.seen: dict[str, list[tuple[int, int]]] = {ns: [] for ns in self.namespaces}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for ns in self.namespaces:
                weights = route_weights(self.cluster, ns)
                if weights is not None and (not self.seen[ns] or self.seen[ns][-1] != weights):
                    self.seen[ns].append(weights)
            self.stop.wait(1.0)


def halts(cluster, namespace: str) -> list[tuple[float, str]]:
    """(time, message) of each check Flagger halted on a metric, from the Canary's events, oldest first (a
    repeated message is one event: Kubernetes counts it)."""
    events = get_all(cluster, "events", namespace, "--field-selector", "involvedObject.kind=Canary")
    out = []
    for event in events:
        message = event.get("message", "")
        stamp = event.get("lastTimestamp") or event.get("eventTime") or ""
        at = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        if (
            message.startswith("Halt") and "advancement" in message and "approval" not in message
        ):  # not the hold
            out.append((float(at), message))
    return sorted(out)


def query_errors(cluster, namespace: str) -> list[str]:
    """Flagger's events for checks whose query itself failed (not a value out of bounds or missing)."""
    events = get_all(cluster, "events", namespace, "--field-selector", "involvedObject.kind=Canary")
    return [e["message"] for e in events if e.get("message", "").startswith("Metric query failed")]


@pytest.fixture(scope="module")
def outcome(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flagger")
    hold = Hold()
    threading.Thread(target=hold.serve_forever, daemon=True).start()
    hold_url = f"http://127.0.0.1:{hold.server_address[1]}/"
    try:
        with flagger(cluster, workdir, metrics_server="http://127.0.0.1:9") as log:
            for namespace in SCENARIOS:
                cluster.create_namespace(namespace)
                if namespace in AUTH:
                    apply(cluster, auth_secret(namespace, AUTH[namespace]))
                apply(cluster, *manifests(workdir, namespace, hold_url))
            for namespace in SCENARIOS:
                wait_for(
                    f"{namespace}: Canary initialized",
                    lambda ns=namespace: canary_phase(cluster, ns) == "Initialized",
                    180,
                    describe=lambda: log_tail(log, 20),
                )
                new_candidate(cluster, "deployment", TARGET, namespace)
            arms = {ns: held_arms(cluster, ns, hold) for ns in SCENARIOS}
            with_data = {ns: (arms[ns], b) for ns, b in SCENARIOS.items() if b is not None}
            with (
                scenario_prometheus(
                    with_data, workdir / "tsdb", seed=5100, past_s=WINDOW_S + 600, future_s=600
                ) as prometheus,
                token_gateway(prometheus.url) as gateway,
            ):
                for namespace in SCENARIOS:
                    address = gateway.url if namespace in AUTH else prometheus.url
                    apply(cluster, *export(workdir, "flagger", namespace, address))
                watcher = WeightWatcher(cluster, SCENARIOS)
                watcher.start()
                hold.released.set()
                try:
                    phases = {
                        ns: wait_for(
                            f"{ns}: the Canary finished",
                            lambda ns=ns: (lambda p: p if p in ("Succeeded", "Failed") else None)(
                                canary_phase(cluster, ns)
                            ),
                            300,
                            interval_s=2.0,
                            describe=lambda ns=ns: (
                                get(cluster, "canary", TARGET, ns).get("status"),
                                log_tail(log, 15),
                            ),
                        )
                        for ns in SCENARIOS
                    }
                    time.sleep(2.0)  # the last route change after promotion or rollback
                finally:
                    watcher.stop.set()
                    watcher.join(timeout=30)
                yield (
                    {
                        ns: {
                            "phase": phases[ns],
                            "canary": get(cluster, "canary", TARGET, ns),
                            "weights": watcher.seen[ns],
                            "halts": halts(cluster, ns),
                            "query_errors": query_errors(cluster, ns),
                            "arms": arms[ns],
                            "prometheus": prometheus.url,
                            "primary_image": get(cluster, "deployment", f"{TARGET}-primary", ns)["spec"][
                                "template"
                            ]["spec"]["containers"][0]["image"],
                        }
                        for ns in SCENARIOS
                    },
                    log,
                    gateway,
                )
    finally:
        hold.shutdown()
        hold.server_close()


def test_good_canary_steps_the_route_and_promotes(outcome):
    scenarios, log, _ = outcome
    good = scenarios["flagger-good"]
    assert good["phase"] == "Succeeded", (good["canary"].get("status"), log_tail(log))
    canary_weights = [c for _, c in good["weights"]]
    assert canary_weights[:3] == [0, 10, 50] and canary_weights[-1] == 0, good["weights"]
    assert good["halts"] == [] and good["primary_image"] == "sglang-vlm:candidate"


def test_regression_rolls_back(outcome):
    scenarios, log, _ = outcome
    bad = scenarios["flagger-p99"]
    assert bad["phase"] == "Failed", (bad["canary"].get("status"), log_tail(log))
    assert max(c for _, c in bad["weights"]) <= 10 and bad["weights"][-1] == (100, 0), bad["weights"]
    assert bad["primary_image"] == "sglang-vlm:baseline"
    assert bad["halts"] and all("latency-e2e-p99-canary" in message for _, message in bad["halts"]), bad[
        "halts"
    ]


def test_no_data_halts_then_rolls_back(outcome):
    """Flagger cannot hold on missing data: each check without a value halts advancement and counts as a
    failed check, so the analysis threshold rolls the canary back (never promotes)."""
    scenarios, log, _ = outcome
    nodata = scenarios["flagger-nodata"]
    assert nodata["phase"] == "Failed", (nodata["canary"].get("status"), log_tail(log))
    assert nodata["primary_image"] == "sglang-vlm:baseline" and nodata["weights"][-1] == (100, 0)
    assert nodata["halts"] and all("no values found" in message for _, message in nodata["halts"]), nodata[
        "halts"
    ]


def test_prometheus_behind_a_token_gateway_is_read_with_the_exported_secret_and_header(outcome):
    scenarios, log, gateway = outcome
    good = scenarios["flagger-auth"]
    assert good["phase"] == "Succeeded", (good["canary"].get("status"), log_tail(log))
    assert (
        good["halts"] == [] and good["query_errors"] == [] and good["primary_image"] == "sglang-vlm:candidate"
    )
    assert gateway.accepted >= len(good["canary"]["spec"]["analysis"]["metrics"])
    # the wrong token: every check's query fails (401), a failed check each, and the threshold rolls back
    refused = scenarios["flagger-auth-refused"]
    assert refused["phase"] == "Failed", (refused["canary"].get("status"), log_tail(log))
    assert refused["query_errors"] and all("401" in m for m in refused["query_errors"]), refused[
        "query_errors"
    ]
    assert refused["primary_image"] == "sglang-vlm:baseline" and gateway.refused >= 1


@pytest.mark.parametrize("namespace", ["flagger-good", "flagger-p99", "flagger-auth"])
def test_halts_match_our_evaluator(outcome, namespace):
    """Flagger stops a check at its first failing metric: at each halt, that metric's gate is the first in
    the analysis order that our evaluator fails on the same window; without halts, ours passes them all."""
    scenarios, _, _ = outcome
    scenario = scenarios[namespace]
    config = load_gate_file(None, profile="kubernetes")
    order = [m["name"] for m in scenario["canary"]["spec"]["analysis"]["metrics"]]
    checks = scenario["halts"] or [(time.time() - 5.0, "")]
    for at, message in checks:
        ours = judge_like_export(config, scenario["prometheus"], scenario["arms"], at, WINDOW_S)
        first_failing = next(
            (m for m in order if ours.gate(gate_of(config, m)).raw_verdict.value != "pass"), None
        )
        halted = next((m for m in order if f" {m} " in message), None)
        assert halted == first_failing, (
            message,
            {g.name: (g.raw_verdict.value, g.reason) for g in ours.gates},
        )
