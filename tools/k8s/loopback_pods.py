"""Server pods that really serve on the loopback node (tools/k8s/node.py), without a pod network.

Tests may send traffic to loopback addresses only, so the node runs `hostNetwork` pods and each server
pod binds an address of its own in 127.0.0.0/8, derived from its namespace and name (`pod_address`).
Three pieces make the chart's pods run that way, each standing in for what a cluster has:

    python tools/k8s/loopback_pods.py post-render   # helm --post-renderer: manifests on stdin -> stdout
    python tools/k8s/loopback_pods.py serve -- CMD  # a server container's entrypoint (inside the pod)
    python tools/k8s/loopback_pods.py probe PATH PORT  # a server container's probes (inside the pod)

The post-renderer changes only what a pod network and GPUs would otherwise provide, in every pod
template whose container starts `sglang.launch_server` (so Flagger's `-primary` copy and Argo's
ReplicaSets inherit it): `hostNetwork` on the loopback node; no container ports (hostNetwork ports
become host ports, and the kubelet admits one pod per host port, while every pod here binds its own
address), their numbers kept in an annotation for the network stand-in (tools/k8s/loopback_network.py);
HTTP probes as exec probes against the pod's own address (the kubelet would probe the node IP); no
`nvidia.com/gpu` and no GPU node selector (the arms run the embedded backend on CPU); and the checkout and its Python mounted
from the host read-only, run as root because the interpreter's directory is root's. `serve` runs the
embedded SGLang-compatible backend (`python -m backend`, sglang's flags) in place of
`sglang.launch_server`, bound to the pod's address. Everything else is as the chart renders it.

This module is stdlib-only at import: it starts inside every pod and every probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

NODE_NAME = "loopback-node-0"
PORTS_ANNOTATION = "loopback-pods.sglang-vlm-canary.test/ports"
SERVER_MODULE = "sglang.launch_server"
ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()


def pod_address(namespace: str, pod: str) -> str:
    """The loopback address a pod binds: 127.100-199.x.y from a hash of its name (never 127.0.0.x, which
    other tests and free ports use). Two pods share one with odds of about 1 in 2.5 million."""
    digest = hashlib.sha256(f"{namespace}/{pod}".encode()).digest()
    return f"127.{100 + digest[0] % 100}.{digest[1]}.{1 + digest[2] % 254}"


def _own_address() -> str:
    return pod_address(os.environ["POD_NAMESPACE"], os.environ["POD_NAME"])


def serve(command: list[str]) -> None:
    """Exec the embedded backend with `command`'s sglang flags, bound to this pod's address."""
    if (
        SERVER_MODULE not in command
        or command.index(SERVER_MODULE) == 0
        or command[command.index(SERVER_MODULE) - 1] != "-m"
    ):
        raise SystemExit(f"loopback pod: expected a `-m {SERVER_MODULE}` command, got {command}")
    flags = command[command.index(SERVER_MODULE) + 1 :]
    if "--host" in flags:
        flags[flags.index("--host") + 1] = _own_address()
    else:
        flags += ["--host", _own_address()]
    os.execv(sys.executable, [sys.executable, "-m", "backend", *flags])


def probe(path: str, port: int, timeout_s: float = 20.0) -> int:
    """0 when this pod's server answers `path` with 2xx or 3xx (the kubelet's httpGet rule), else 1."""
    try:
        with urllib.request.urlopen(f"http://{_own_address()}:{port}{path}", timeout=timeout_s) as resp:
            return 0 if resp.status < 400 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"probe {path}: {exc}", file=sys.stderr)
        return 1


def _is_server(container: dict[str, Any]) -> bool:
    return SERVER_MODULE in [*container.get("command", []), *container.get("args", [])]


def _host_dirs() -> list[Path]:
    """The checkout and the interpreter it runs (the virtualenv and the Python it was made from)."""
    dirs: list[Path] = []
    for path in (ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()):
        if not any(path == d or d in path.parents for d in dirs):
            dirs.append(path)
    return dirs


def _exec_probe(probe_spec: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    get = probe_spec.pop("httpGet")
    port = ports[get["port"]] if isinstance(get["port"], str) else int(get["port"])
    command = [sys.executable, str(THIS), "probe", get.get("path", "/"), str(port)]
    return {**probe_spec, "exec": {"command": command}}


def _loopback_pod_spec(template: dict[str, Any]) -> None:
    spec = template["spec"]
    servers = [c for c in spec.get("containers", []) if _is_server(c)]
    if not servers:
        return
    recorded: dict[str, dict[str, int]] = {}
    volumes = [(f"loopback-host-{i}", d) for i, d in enumerate(_host_dirs())]
    for container in servers:
        ports = recorded[container["name"]] = {
            port.get("name", str(port["containerPort"])): int(port["containerPort"])
            for port in container.pop("ports", [])
        }
        container["command"] = [sys.executable, str(THIS), "serve", "--", *container.get("command", [])]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(kind, {}):
                container[kind] = _exec_probe(container[kind], ports)
        for bound in ("requests", "limits"):
            container.get("resources", {}).get(bound, {}).pop("nvidia.com/gpu", None)
        env = [
            e
            for e in container.get("env", [])
            if e["name"] not in ("POD_NAME", "POD_NAMESPACE", "PYTHONPATH")
        ]
        container["env"] = [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "PYTHONPATH", "value": str(ROOT)},
            *env,
        ]
        container["workingDir"] = str(ROOT)
        container.setdefault("volumeMounts", []).extend(
            {"name": name, "mountPath": str(path), "readOnly": True} for name, path in volumes
        )
        container["securityContext"] = {
            **container.get("securityContext", {}),
            "runAsUser": 0,
            "runAsNonRoot": False,
        }
    spec.setdefault("volumes", []).extend(
        {"name": name, "hostPath": {"path": str(path), "type": "Directory"}} for name, path in volumes
    )
    spec["hostNetwork"] = True
    spec["dnsPolicy"] = "Default"
    spec["nodeSelector"] = {"kubernetes.io/hostname": NODE_NAME}  # in place of the GPU pool's selector
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[PORTS_ANNOTATION] = json.dumps(recorded, sort_keys=True)


def post_render(manifests: str) -> str:
    """helm's post-renderer: every server pod template made a loopback pod; all else unchanged."""
    import yaml  # only here: the in-pod commands stay stdlib-only

    docs = [d for d in yaml.safe_load_all(manifests) if d]
    for doc in docs:
        template = doc.get("spec", {}).get("template")
        if isinstance(template, dict) and "spec" in template:
            _loopback_pod_spec(template)
    return yaml.safe_dump_all(docs, sort_keys=False)


def main(argv: list[str]) -> int:
    if argv[:1] == ["post-render"]:
        sys.stdout.write(post_render(sys.stdin.read()))
        return 0
    if argv[:2] == ["serve", "--"]:
        serve(argv[2:])
    if len(argv) == 3 and argv[0] == "probe":
        return probe(argv[1], int(argv[2]))
    print(__doc__, file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
