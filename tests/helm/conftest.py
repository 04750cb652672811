"""Render the chart with the real helm binary (built once by tools/install-helm.sh) and parse it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# The shared helpers import as `helm_chart_render` under importlib mode.
sys.path.insert(0, str(Path(__file__).parent))

from helm_chart_render import ROOT, HelmResult, Rendered, load_tool, template_args  # noqa: E402


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    # Idempotent: returns at once when the pinned helm is already built (as `make test` ensures).
    subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True, timeout=1800)
    return ROOT / ".cache" / "bin" / "helm"


@pytest.fixture(scope="session")
def run_helm(helm_bin: Path) -> Callable[..., HelmResult]:
    def run(*args: str) -> HelmResult:
        proc = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., HelmResult]) -> Callable[..., Rendered]:
    cache: dict[tuple[Any, ...], Rendered] = {}

    def do_render(*values_files: str, sets: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Rendered:
        key = (values_files, sets, extra)
        if key not in cache:
            result = run_helm(*template_args(values_files, sets, *extra))
            assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
            docs = [d for d in yaml.safe_load_all(result.stdout) if d]
            cache[key] = Rendered(tuple(docs))
        return cache[key]

    return do_render


@pytest.fixture(scope="session")
def render_error(run_helm: Callable[..., HelmResult]) -> Callable[..., str]:
    """Render values that must be rejected; returns helm's error text."""

    def do_render(*sets: str, values_file: str | None = None) -> str:
        files = (values_file,) if values_file else ()
        result = run_helm(*template_args(files, sets))
        assert result.returncode != 0, (
            f"helm accepted bad values {sets or values_file}:\n{result.stdout[:2000]}"
        )
        return result.stderr

    return do_render


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, helm_bin: Path):
    """One real control plane (tools/k8s/cluster.py) for the k8s tests; stopped at the end, even on failure."""
    cluster_tool = load_tool("k8s/cluster")
    began = time.monotonic()
    with cluster_tool.running(tmp_path_factory.mktemp("k8s") / "cluster") as running_cluster:
        print(f"control plane up in {time.monotonic() - began:.1f}s")
        yield running_cluster
