"""helm lint, the generated values table, and the chart's copy of the load generator."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helm_chart_render import CHART, KUBE_VERSION, ROOT, SCENARIOS, load_tool

helm_docs = load_tool("helm_docs")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(run_helm, scenario):
    result = run_helm(
        "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(CHART / "ci" / scenario)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_readme_values_table_is_current():
    proc = subprocess.run(
        [sys.executable, "tools/helm_docs.py", str(CHART.relative_to(ROOT)), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_value_appears_in_the_readme():
    readme = (CHART / "README.md").read_text()
    paths = [
        param.path
        for section in helm_docs.parse((CHART / "values.yaml").read_text())
        for param in section.params
    ]
    assert {"server.tpSize", "arms.canary.mmInputMode", "route.weights.canary"} <= set(paths)
    missing = [path for path in paths if f"| `{path}` |" not in readme]
    assert missing == []


VALUES_OK = """\
## @section Server
server:
  ## @param server.port Port
  port: 1
  ## @param server.env Environment | variables
  env: []
"""


def test_docs_table_has_defaults_and_escapes_pipes():
    table = helm_docs.render_table(helm_docs.parse(VALUES_OK))
    assert "### Server" in table
    assert "| `server.port` | Port | `1` |" in table
    assert "| `server.env` | Environment \\| variables | `[]` |" in table


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (VALUES_OK + "  extra: 2\n", "value server.extra has no @param comment"),
        (VALUES_OK + "  ## @param server.gone Removed\n", "@param server.gone names no value in the file"),
        ("## @param a A\na: 1\n", "@param a comes before any @section"),
        (VALUES_OK + "## @parm server.port typo\n", "malformed comment"),
    ],
)
def test_docs_parser_names_each_problem(text, problem):
    with pytest.raises(helm_docs.ValuesDocError, match=problem):
        helm_docs.parse(text)


def test_docs_update_needs_markers():
    with pytest.raises(helm_docs.ValuesDocError, match="no values-table markers"):
        helm_docs.update_readme("# chart\n", "table")
    updated = helm_docs.update_readme(f"a\n{helm_docs.START}\nold\n{helm_docs.END}\nb\n", "new")
    assert updated == f"a\n{helm_docs.START}\nnew\n{helm_docs.END}\nb\n"


def test_chart_reads_loadtest_through_a_link_not_a_copy():
    # One implementation: helm follows the link when it loads or packages the chart.
    link = ROOT / "helm" / "sglang-vlm-canary" / "files" / "loadtest"
    assert link.is_symlink() and link.resolve() == (ROOT / "loadtest").resolve()
    assert (link / "vlm.py").is_file(), "loadtest/vlm.py is missing"


def test_locustfile_configmap_carries_loadtest_byte_for_byte(render):
    out = render("loadtest-mesh-values.yaml")
    data = out.get("ConfigMap", "vlm-locustfile")["data"]
    sources = {p.name: p.read_text() for p in (ROOT / "loadtest").glob("*.py")}
    assert sorted(data) == sorted(sources)
    for name, text in sources.items():
        assert data[name] == text, f"{name} differs in the rendered ConfigMap"


def test_locustfile_configmap_fits_the_configmap_size_limit(render):
    # The API server refuses ConfigMaps over 1 MiB; the whole loadtest package travels in one.
    data = render("loadtest-mesh-values.yaml").get("ConfigMap", "vlm-locustfile")["data"]
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    assert size < 1024 * 1024 * 0.8, f"locustfile ConfigMap is {size} bytes"
