"""Only `rollout/kube.py` talks to the Kubernetes client (kopf's rule: one thin wrapper layer)."""

import ast
from pathlib import Path

ROLLOUT = Path(__file__).resolve().parents[2] / "rollout"


def test_only_kube_module_imports_the_kubernetes_client():
    offenders = []
    for path in sorted(ROLLOUT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "kubernetes" or n.startswith("kubernetes.") for n in names):
                offenders.append(path.relative_to(ROLLOUT).as_posix())
    assert offenders and set(offenders) == {"kube.py"}
