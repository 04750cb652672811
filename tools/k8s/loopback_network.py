"""Stands in for the pod network of the loopback node (tools/k8s/node.py): where the real pods can be
reached, told to the two things that route to pods by address.

A cluster's CNI gives each pod an IP, the EndpointSlice controller lists ready pods under their
Services, and Prometheus's pod discovery (what the Prometheus Operator configures from a PodMonitor)
finds them. Here every server pod is a `hostNetwork` pod bound to its own loopback address
(tools/k8s/loopback_pods.py), which the API server does not know, and IPv4 EndpointSlices refuse
loopback addresses. So, polling the API server every half second, this:
- writes one `addressType: FQDN` EndpointSlice per Service that selects loopback pods, each pod at its
  loopback address with the ready/serving/terminating conditions the EndpointSlice controller would
  give it (that controller is switched off in this cluster: it would list the node's IP, where nothing
  listens);
- writes a Prometheus file_sd file with one target per pod and container port and the
  `__meta_kubernetes_*` labels Prometheus's `role: pod` discovery gives it, so the scrape jobs made from
  the chart's PodMonitor (`podmonitor_scrape_configs`, as the Operator generates them) select and
  relabel them unchanged.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes  # type: ignore[import-untyped]
from loopback_pods import NODE_NAME, PORTS_ANNOTATION, pod_address  # type: ignore[import-not-found]

MANAGED_BY = "loopback-network.sglang-vlm-canary.test"


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _ports(pod: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """{container: {port name: number}} as the post-renderer recorded them."""
    return json.loads(pod["metadata"].get("annotations", {}).get(PORTS_ANNOTATION, "{}"))


def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def endpoint_slice(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The slice the EndpointSlice controller would write for `service`, with loopback addresses."""
    meta = service["metadata"]
    endpoints, ports = [], []
    for pod in pods:
        terminating = pod["metadata"].get("deletionTimestamp") is not None
        ready = _ready(pod)
        endpoints.append(
            {
                "addresses": [pod_address(pod["metadata"]["namespace"], pod["metadata"]["name"])],
                "conditions": {
                    "ready": ready and not terminating,
                    "serving": ready,
                    "terminating": terminating,
                },
                "nodeName": NODE_NAME,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": pod["metadata"]["namespace"],
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
        )
    named = {
        name: number for pod in pods for ports_of in _ports(pod).values() for name, number in ports_of.items()
    }
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        number = named.get(target) if isinstance(target, str) else int(target)
        if number is not None:
            ports.append(
                {"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")}
            )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{meta['name']}-loopback",
            "namespace": meta["namespace"],
            "labels": {
                "kubernetes.io/service-name": meta["name"],
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "addressType": "FQDN",
        "endpoints": endpoints,
        "ports": ports,
    }


def pod_targets(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """file_sd groups: one per pod container port, labelled as Prometheus's pod discovery labels it."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status", {})
        common = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_uid": meta["uid"],
            "__meta_kubernetes_pod_ip": status.get("podIP", ""),
            "__meta_kubernetes_pod_node_name": NODE_NAME,
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": "true" if _ready(pod) else "false",
        }
        for key, value in (meta.get("labels") or {}).items():
            common[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
            common[f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"] = "true"
        for key, value in (meta.get("annotations") or {}).items():
            common[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = value
            common[f"__meta_kubernetes_pod_annotationpresent_{_sanitize(key)}"] = "true"
        address = pod_address(meta["namespace"], meta["name"])
        for container, ports in _ports(pod).items():
            for name, number in ports.items():
                labels = {
                    **common,
                    "__meta_kubernetes_pod_container_name": container,
                    "__meta_kubernetes_pod_container_port_name": name,
                    "__meta_kubernetes_pod_container_port_number": str(number),
                    "__meta_kubernetes_pod_container_port_protocol": "TCP",
                }
                groups.append({"targets": [f"{address}:{number}"], "labels": labels})
    return groups


_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "separator": "separator",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


def podmonitor_scrape_configs(podmonitor: Mapping[str, Any], sd_file: Path) -> list[dict[str, Any]]:
    """The scrape jobs the Prometheus Operator generates from a PodMonitor, with file_sd (`sd_file`) in
    place of `kubernetes_sd_configs: [{role: pod}]`: keep the selected, running pods' named port, label
    namespace/container/pod/job/endpoint, then the PodMonitor's own relabelings."""
    meta, spec = podmonitor["metadata"], podmonitor["spec"]
    selector = spec.get("selector", {})
    keep: list[dict[str, Any]] = [
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}
    ]
    for key, value in (selector.get("matchLabels") or {}).items():
        keep.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_pod_label_{_sanitize(key)}",
                    f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}",
                ],
                "regex": f"({value});true",
            }
        )
    for expression in selector.get("matchExpressions") or []:
        labels = [
            f"__meta_kubernetes_pod_label_{_sanitize(expression['key'])}",
            f"__meta_kubernetes_pod_labelpresent_{_sanitize(expression['key'])}",
        ]
        values = "|".join(expression.get("values") or [])
        action, regex = {
            "In": ("keep", f"({values});true"),
            "NotIn": ("drop", f"({values});true"),
            "Exists": ("keep", ".*;true"),
            "DoesNotExist": ("drop", ".*;true"),
        }[expression["operator"]]
        keep.append({"action": action, "source_labels": labels, "regex": regex})
    namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
    keep.append(
        {"action": "keep", "source_labels": ["__meta_kubernetes_namespace"], "regex": "|".join(namespaces)}
    )
    configs = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints", [])):
        relabel = [
            *keep,
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": endpoint["port"],
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            *({_RELABEL_KEYS[k]: v for k, v in rule.items()} for rule in endpoint.get("relabelings", [])),
        ]
        config: dict[str, Any] = {
            "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "metrics_path": endpoint.get("path", "/metrics"),
            "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "5s"}],
            "relabel_configs": relabel,
        }
        if endpoint.get("interval"):
            config["scrape_interval"] = endpoint["interval"]
        configs.append(config)
    return configs


class LoopbackNetwork:
    """Keeps the FQDN slices and the file_sd targets in step with the loopback node's pods."""

    def __init__(self, kubeconfig: Path, sd_file: Path, interval_s: float = 0.5) -> None:
        self.api = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.discovery = kubernetes.client.DiscoveryV1Api(self.api)
        self.sd_file = sd_file
        self.interval_s = interval_s
        self.errors: list[str] = []
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-network", daemon=True)
        self.sync()

    def start(self) -> LoopbackNetwork:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.api.close()

    def _list(self, call: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return json.loads(call(_preload_content=False, **kwargs).data)["items"]

    def sync(self) -> None:
        pods = self._list(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={NODE_NAME}")
        pods = [p for p in pods if _ports(p)]
        groups = pod_targets(pods)
        text = json.dumps(groups, indent=1, sort_keys=True)
        if not self.sd_file.exists() or self.sd_file.read_text() != text:
            tmp = self.sd_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.sd_file)  # Prometheus must never read half a file
        for service in self._list(self.core.list_service_for_all_namespaces):
            meta = service["metadata"]
            selected = [
                p
                for p in pods
                if p["metadata"]["namespace"] == meta["namespace"]
                and _selects(service["spec"].get("selector"), p["metadata"].get("labels") or {})
            ]
            key = (meta["namespace"], meta["name"])
            if not selected and key not in self._written:
                continue
            body: Any = endpoint_slice(service, selected)  # the client sends plain dicts as they are
            if self._written.get(key) == body:
                continue
            name = body["metadata"]["name"]
            try:
                self.discovery.replace_namespaced_endpoint_slice(name, meta["namespace"], body)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                self.discovery.create_namespaced_endpoint_slice(meta["namespace"], body)
            self._written[key] = body

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - kept for the test to report; the loop must go on
                self.errors.append(repr(exc))
