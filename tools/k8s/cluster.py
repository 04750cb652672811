"""A real Kubernetes control plane on this machine, for the k8s test tier.

    python tools/k8s/cluster.py up [--dir DIR]   # start; prints the kubeconfig path; Ctrl-C stops it

etcd, kube-apiserver (RBAC on), kube-controller-manager and kube-scheduler run as local processes
from the binaries tools/k8s/build.sh puts in .cache/k8s/bin; kwok plays the kubelet for two fake GPU
nodes (`nvidia.com/gpu` allocatable, GPU taint and label) and one CPU node, and walks pods through
their lifecycle.
The Gateway API and ServiceMonitor/PodMonitor CRDs are installed. State lives in a fresh directory,
so every start is a new, empty cluster; only the binaries are cached.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(ROOT))

from infra.net import free_port, wait_http_ok  # noqa: E402

BUILD = ROOT / ".cache" / "k8s"
BIN = BUILD / "bin"
CRDS = BUILD / "crds"
# kwok manages only nodes carrying this annotation, so nothing else is ever faked.
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ClusterError(RuntimeError):
    """The control plane could not start; the message names the component and its log."""


@dataclass(frozen=True)
class FakeNode:
    """A kwok node; with GPUs it carries the GPU label and taint a GPU node pool has."""

    name: str
    gpus: int = 8
    cpu: str = "128"
    memory: str = "1Ti"


# Two 8-GPU nodes for the servers and one CPU node for Jobs (orchestrator, Locust), as in a real cluster.
DEFAULT_NODES = (
    FakeNode("gpu-node-0"),
    FakeNode("gpu-node-1"),
    FakeNode("cpu-node-0", gpus=0, cpu="16", memory="64Gi"),
)


@dataclass
class Cluster:
    """A running control plane; `stop()` ends every process it started."""

    workdir: Path
    kubeconfig: Path
    server: str
    token: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 120):
        """Run the cluster-matched kubectl as cluster admin; its discovery cache stays in the workdir."""
        cache = self.workdir / "kubectl-cache"
        proc = subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(cache), *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def create_namespace(self, name: str, timeout_s: float = 60) -> None:
        """Create a namespace and wait for its default ServiceAccount, without which pods are refused."""
        self.kubectl("create", "namespace", name)
        _wait_default_service_account(self, timeout_s, name)

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount itself (a TokenRequest token)."""
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration", "1h").stdout.strip()
        _write_kubeconfig(path, self.server, token, namespace=namespace)
        return path

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.workdir / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        # Reverse start order: clients first, etcd last, each by its own pid.
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            self.logs[name].close()
        self.procs.clear()


def require_binaries() -> None:
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
        if not (BIN / b).is_file()
    ]
    if missing:
        raise ClusterError(f"missing in {BIN.relative_to(ROOT)}: {', '.join(missing)}; run `make k8s-build`")


def spawn(cluster: Cluster, name: str, argv: Sequence[str]) -> subprocess.Popen:
    """Start one of the cluster's processes, logging to `<workdir>/<name>.log`; `Cluster.stop` ends it."""
    log = open(cluster.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in Cluster.stop
    cluster.logs[name] = log
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, cwd=cluster.workdir, start_new_session=True
    )
    cluster.procs[name] = proc
    return proc


def _alive(cluster: Cluster, name: str):
    def check() -> bool:
        if cluster.procs[name].poll() is not None:
            raise ClusterError(f"{name} exited ({cluster.procs[name].returncode}):\n{cluster.log_tail(name)}")
        return True

    return check


def _write_kubeconfig(path: Path, server: str, token: str, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": namespace}}
        ],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def node_manifest(nodes: Sequence[FakeNode]) -> str:
    items = []
    for node in nodes:
        resources = {"cpu": node.cpu, "memory": node.memory, "pods": "110"}
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        taints = []
        if node.gpus:
            resources["nvidia.com/gpu"] = str(node.gpus)
            labels |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(node.gpus)}
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": labels,
                },
                "spec": {"taints": taints},
                "status": {"capacity": resources, "allocatable": resources},
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def start(
    workdir: Path,
    nodes: Sequence[FakeNode] = DEFAULT_NODES,
    *,
    controllers: Sequence[str] = ("*",),
    timeout_s: float = 120,
) -> Cluster:
    """Start etcd, the control plane and kwok in `workdir` (created empty); stops everything on failure.
    `controllers` is kube-controller-manager's `--controllers` list (e.g. "-endpointslice-controller" for
    a node whose pods have no routable IP, tools/k8s/loopback_network.py)."""
    require_binaries()
    workdir.mkdir(parents=True, exist_ok=False)
    token = secrets.token_hex(16)
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    cluster = Cluster(workdir, workdir / "kubeconfig", server, token)
    try:
        for cmd in (
            ["openssl", "genrsa", "-out", "sa.key", "2048"],
            ["openssl", "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        ):
            subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, timeout=60)
        (workdir / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        _write_kubeconfig(cluster.kubeconfig, server, token)

        spawn(
            cluster,
            "etcd",
            [
                str(BIN / "etcd"),
                "--data-dir",
                str(workdir / "etcd"),
                "--unsafe-no-fsync",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{free_port()}",
            ],
        )
        wait_http_ok(f"http://127.0.0.1:{etcd_port}/health", timeout_s, alive=_alive(cluster, "etcd"))

        spawn(
            cluster,
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                "--etcd-servers",
                f"http://127.0.0.1:{etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(api_port),
                "--cert-dir",
                str(workdir / "pki"),
                "--token-auth-file",
                str(workdir / "tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(workdir / "sa.pub"),
                "--service-account-signing-key-file",
                str(workdir / "sa.key"),
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        )
        _wait_api(cluster, timeout_s)

        for name, binary in (
            ("kube-controller-manager", "kube-controller-manager"),
            ("kube-scheduler", "kube-scheduler"),
        ):
            argv = [
                str(BIN / binary),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
            ]
            if name == "kube-controller-manager":
                argv += [
                    "--service-account-private-key-file",
                    str(workdir / "sa.key"),
                    "--use-service-account-credentials=false",
                    "--controllers",
                    ",".join(controllers),
                ]
            spawn(cluster, name, argv)
        spawn(
            cluster,
            "kwok",
            [
                str(BIN / "kwok"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--cidr",
                "10.244.0.1/16",
                "--node-ip",
                "10.244.0.1",
                "--node-lease-duration-seconds",
                "40",
                "--server-address",
                f"127.0.0.1:{free_port()}",
            ],
        )
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout", f"{int(timeout_s)}s"
        )
        if nodes:
            cluster.kubectl("apply", "-f", "-", input_text=node_manifest(nodes))
            cluster.kubectl(
                "wait", "--for=condition=Ready", "node", "--all", "--timeout", f"{int(timeout_s)}s"
            )
        _wait_default_service_account(cluster, timeout_s)
        for name in cluster.procs:
            _alive(cluster, name)()
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _wait_api(cluster: Cluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _alive(cluster, "kube-apiserver")()
        if cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise ClusterError(
        f"kube-apiserver not ready after {timeout_s:.0f}s:\n{cluster.log_tail('kube-apiserver')}"
    )


def _wait_default_service_account(cluster: Cluster, timeout_s: float, namespace: str = "default") -> None:
    # Pods are refused until the controller manager has created the namespace's default account.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0:
            return
        time.sleep(0.3)
    raise ClusterError(
        f"no default ServiceAccount in {namespace} after {timeout_s:.0f}s:\n"
        + cluster.log_tail("kube-controller-manager")
    )


@contextmanager
def running(workdir: Path, nodes: Sequence[FakeNode] = DEFAULT_NODES, **options: Any) -> Iterator[Cluster]:
    cluster = start(workdir, nodes, **options)
    try:
        yield cluster
    finally:
        cluster.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the cluster the way Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up"])
    parser.add_argument(
        "--dir", type=Path, default=BUILD / f"run-{os.getpid()}", help="state directory (new)"
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        cluster = start(args.dir)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    print(
        f"cluster up in {time.monotonic() - began:.1f}s; export KUBECONFIG={cluster.kubeconfig}", flush=True
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while all(p.poll() is None for p in cluster.procs.values()):
            time.sleep(1)
        print("cluster: a component exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
