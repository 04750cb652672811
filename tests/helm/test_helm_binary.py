"""The helm `make test` builds behaves like a released one: stamped version and commit, and the
Kubernetes version its client-go targets as the default, so documented commands work as written."""

from __future__ import annotations

import re

from helm_chart_render import CHART, ROOT

SCRIPT = (ROOT / "tools" / "install-helm.sh").read_text()


def _pin(name: str) -> str:
    match = re.search(rf'{name}="\$\{{{name}:-([^}}]+)\}}"', SCRIPT)
    assert match, f"{name} is not pinned in tools/install-helm.sh"
    return match.group(1)


def test_version_and_commit_are_the_pinned_release(run_helm):
    result = run_helm("version", "--template", "{{.Version}} {{.GitCommit}} {{.GitTreeState}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [_pin("HELM_VERSION"), _pin("HELM_COMMIT"), "clean"]


def test_template_renders_the_chart_without_kube_version(run_helm):
    """The chart requires Kubernetes >= 1.27; an unstamped helm assumes 1.20 and refuses."""
    result = run_helm("template", "t", str(CHART))
    assert result.returncode == 0, result.stderr
    assert "kind: HTTPRoute" in result.stdout
    lint = run_helm("lint", "--strict", str(CHART))
    assert lint.returncode == 0, lint.stdout + lint.stderr
