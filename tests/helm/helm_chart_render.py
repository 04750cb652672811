"""Names and result types shared by the chart tests (imported by name: conftest puts this folder on sys.path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sglang-vlm-canary"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "vlm"
NAMESPACE = "serving"
# The Kubernetes version the render tests pin (the chart needs 1.27+).
KUBE_VERSION = "1.32.0"


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template` run, addressable by kind and name."""

    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)} among {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in self.objects)


def template_args(values_files: tuple[str, ...] = (), sets: tuple[str, ...] = (), *extra: str) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *extra]
    for f in values_files:
        args += ["--values", str(CHART / "ci" / f) if "/" not in f else f]
    for s in sets:
        args += ["--set", s]
    return args


def load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py, e.g. "helm_docs" or "k8s/cluster" (tools/ holds scripts, not a package)."""
    module_name = "tools_" + name.replace("/", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def helm_on(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """helm against a running tools/k8s/cluster.py control plane."""
    env = os.environ | {
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(cluster.workdir / "helm"),
    }
    proc = subprocess.run(
        [str(ROOT / ".cache" / "bin" / "helm"), *args], capture_output=True, text=True, timeout=300, env=env
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
    return proc
