"""A real node for the control plane of tools/k8s/cluster.py: Debian's containerd and runc under a kubelet
built from the control plane's Kubernetes module, plus kube-state-metrics, all on loopback.

    node = start_node(cluster, workdir, images=[...])   # node Ready, images imported
    node.stop()                                          # pods deleted through the API and containerd

What this machine kind needs, each measured (docs/helm.md lists them):
- containerd's socket at its default path, /run/containerd/containerd.sock: only then does the
  kubelet's cAdvisor label container series with `container`. So one node per machine at a time;
  `start_node` refuses when another containerd answers there.
- `restrict_oom_score_adj = true`: this VM refuses a negative oom_score_adj even to root, and without
  it every sandbox fails ("can't get final child's PID from pipe: EOF").
- cgroup v1 with the cgroupfs driver (`failCgroupV1: false`), swap allowed, no node allocatable
  enforcement and no local storage isolation.
- No pod network: pods are `hostNetwork` (tools/k8s/loopback_pods.py). A CNI configuration holding only
  the loopback plugin makes the runtime report its network ready, so the node is Ready without a
  toleration; a pod that is not `hostNetwork` would get a network namespace with `lo` alone.
- The sandbox ("pause") image is a local image whose entrypoint sleeps; images come from podman's
  storage (`podman save` | `ctr images import`), never from a registry.
The kubelet serves its API (logs, cAdvisor's `/metrics/cadvisor`) on 127.0.0.1:10250 with anonymous
access allowed: the API server reaches it there only if it resolves the node's name, so tests read
container logs from /var/log/pods instead of `kubectl logs`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tools/k8s holds scripts, not a package

from cluster import BIN, Cluster, ClusterError, spawn  # noqa: E402
from loopback_pods import NODE_NAME  # noqa: E402

from infra.net import free_port, wait_http_ok  # noqa: E402

CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
CRI_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/sglang-vlm-canary-test/pause:local"
KUBELET_PORT = 10250
CADVISOR_URL = f"https://127.0.0.1:{KUBELET_PORT}/metrics/cadvisor"


@dataclass
class Node:
    cluster: Cluster
    workdir: Path
    kube_state_metrics_url: str

    def ctr(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "-n", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def import_images(self, refs: Sequence[str]) -> None:
        """Copy images from podman's storage into containerd's (the kubelet's image service)."""
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            archive = Path(tmp) / "images.tar"
            subprocess.run(
                ["podman", "save", "-q", "-m", "--format", "docker-archive", "-o", str(archive), *refs],
                check=True,
                capture_output=True,
                timeout=600,
            )
            self.ctr("images", "import", str(archive), timeout=600)

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """What a container wrote (all its restarts), read where the kubelet keeps it."""
        logs = sorted(Path("/var/log/pods").glob(f"{namespace}_{pod}_*/{container}/*.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Delete every pod on the node and let the kubelet stop them; whatever is left is killed through
        containerd (a pod's PID 1 may ignore SIGTERM); then the node's processes end, containerd last."""
        try:
            self.cluster.kubectl("cordon", NODE_NAME, check=False)  # no replacement pods while stopping
            self.cluster.kubectl(
                "delete",
                "pods",
                "--all-namespaces",
                "--field-selector",
                f"spec.nodeName={NODE_NAME}",
                "--grace-period",
                "5",
                "--wait=false",
                check=False,
            )
            deadline = time.monotonic() + timeout_s
            while self._tasks() and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            for name in ("kube-state-metrics", "kubelet"):
                self._stop_process(name)
            for task in self._tasks():
                subprocess.run(
                    ["ctr", "-n", CRI_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", task],
                    capture_output=True,
                    timeout=30,
                )
            deadline = time.monotonic() + 30
            while self._tasks() and time.monotonic() < deadline:
                time.sleep(0.5)
            self._stop_process("containerd")
            _unmount_under(self.workdir)

    def _tasks(self) -> list[str]:
        try:
            out = self.ctr("tasks", "list", "-q", timeout=30)
        except (ClusterError, subprocess.SubprocessError):
            return []
        return [line for line in out.split() if line]

    def _stop_process(self, name: str) -> None:
        proc = self.cluster.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.cluster.logs.pop(name).close()


def _unmount_under(directory: Path) -> None:
    """The kubelet bind-mounts its root directory and mounts pods' volumes under it; deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted(
        (m for m in mounts if Path(m) == directory or directory in Path(m).parents), reverse=True
    ):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)


def _containerd_config(workdir: Path) -> Path:
    cni = workdir / "cni"
    cni.mkdir()
    (cni / "10-loopback.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]})
    )
    config = workdir / "containerd.toml"
    config.write_text(
        f"""version = 2
root = "{workdir / "containerd-root"}"
state = "{workdir / "containerd-state"}"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"""
    )
    return config


def _kubelet_config(workdir: Path) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        "localStorageCapacityIsolation": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": "127.0.0.1",
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        # Pod status and readiness reach the API server within a few seconds, as on a busy real node.
        "syncFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        # The shared machine's disk usage is not this node's to manage.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi"},
    }
    path = workdir / "kubelet.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _containerd_running() -> bool:
    if not CONTAINERD_SOCKET.exists():
        return False
    return (
        subprocess.run(
            ["ctr", "--address", str(CONTAINERD_SOCKET), "version"], capture_output=True, timeout=10
        ).returncode
        == 0
    )


def start_node(cluster: Cluster, workdir: Path, images: Sequence[str], *, timeout_s: float = 120) -> Node:
    """containerd, `images` (plus the pause image, made here), a kubelet registered as NODE_NAME and
    kube-state-metrics; stops what it started on failure."""
    for binary in ("kubelet", "kube-state-metrics"):
        if not (BIN / binary).is_file():
            raise ClusterError(f"missing {BIN / binary}; run `make k8s-build`")
    if os.geteuid() != 0:
        raise ClusterError(
            "the node runs containerd and a kubelet, which need root (run the k8s tier as root)"
        )
    if _containerd_running():
        raise ClusterError(
            f"a containerd already serves {CONTAINERD_SOCKET}: one node per machine (stop it first)"
        )
    workdir.mkdir(parents=True)
    ksm_port = free_port()
    node = Node(cluster, workdir, f"http://127.0.0.1:{ksm_port}/metrics")
    try:
        CONTAINERD_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        spawn(cluster, "containerd", ["containerd", "--config", str(_containerd_config(workdir))])
        deadline = time.monotonic() + timeout_s
        while not _containerd_running():
            if cluster.procs["containerd"].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"containerd did not start:\n{cluster.log_tail('containerd')}")
            time.sleep(0.2)
        _build_pause_image(workdir, base=images[0])
        node.import_images([PAUSE_IMAGE, *images])
        spawn(
            cluster,
            "kubelet",
            [
                str(BIN / "kubelet"),
                "--config",
                str(_kubelet_config(workdir)),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--hostname-override",
                NODE_NAME,
                "--root-dir",
                str(workdir / "kubelet"),
            ],
        )
        deadline = time.monotonic() + timeout_s
        while cluster.kubectl("get", "node", NODE_NAME, check=False).returncode != 0:
            if cluster.procs["kubelet"].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(
                    f"the kubelet did not register {NODE_NAME}:\n{cluster.log_tail('kubelet')}"
                )
            time.sleep(0.5)
        cluster.kubectl(
            "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout", f"{int(timeout_s)}s"
        )
        spawn(
            cluster,
            "kube-state-metrics",
            [
                str(BIN / "kube-state-metrics"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--host",
                "127.0.0.1",
                "--port",
                str(ksm_port),
                "--telemetry-host",
                "127.0.0.1",
                "--telemetry-port",
                str(free_port()),
                "--resources",
                "pods,deployments,replicasets,nodes",
            ],
        )
        wait_http_ok(node.kube_state_metrics_url, timeout_s)
        return node
    except BaseException:
        node.stop(timeout_s=10)
        raise


def _build_pause_image(workdir: Path, base: str) -> None:
    """The sandbox image: `base` with an entrypoint that sleeps (no registry serves registry.k8s.io/pause)."""
    containerfile = workdir / "Containerfile.pause"
    containerfile.write_text(f'FROM {base}\nENTRYPOINT ["/bin/sleep", "infinity"]\nCMD []\nUSER 65532\n')
    subprocess.run(
        ["podman", "build", "-q", "-t", PAUSE_IMAGE, "-f", str(containerfile), str(workdir)],
        check=True,
        capture_output=True,
        timeout=300,
    )
