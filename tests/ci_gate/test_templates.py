"""The CI templates users drop into their repository: actionlint for GitHub, a focused schema for GitLab,
and every option they pass exists in the command they call."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra.cli import UsageErrorParser
from rollout.cli import add_ci_gate_flags

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / "ci-templates" / "github-canary-ci-gate.yml"
GITLAB = ROOT / "ci-templates" / "gitlab-canary-ci-gate.yml"
SCHEMA = Path(__file__).with_name("gitlab-ci-focused.schema.json")


@pytest.fixture(scope="module")
def actionlint() -> Path:
    binary = ROOT / ".cache" / "bin" / "actionlint"
    if not binary.exists():  # `make test` builds it first; a direct pytest run builds it here
        if shutil.which("go") is None:
            pytest.fail(
                "actionlint is not built and no Go toolchain is on PATH: run tools/install-actionlint.sh"
            )
        subprocess.run(["bash", str(ROOT / "tools" / "install-actionlint.sh")], check=True, timeout=600)
    return binary


def _actionlint(binary: Path, path: Path) -> subprocess.CompletedProcess[str]:
    # -shellcheck= / -pyflakes= : only actionlint's own checks, whatever happens to be installed.
    return subprocess.run(
        [str(binary), "-no-color", "-shellcheck=", "-pyflakes=", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_github_workflow_passes_actionlint(actionlint: Path) -> None:
    result = _actionlint(actionlint, GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_copy(actionlint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = GITHUB.read_text().replace("${{ inputs.rate || '20' }}", "${{ inputs.request_rate || '20' }}")
    assert text != GITHUB.read_text()
    broken.write_text(text)
    result = _actionlint(actionlint, broken)
    assert result.returncode != 0 and "request_rate" in result.stdout, result.stdout


def test_gitlab_template_matches_the_focused_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    document = yaml.safe_load(GITLAB.read_text())
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(document)] == []
    # every job, hidden ones too, was checked against the schema's job definition
    jobs = {key for key in document if key not in schema["properties"]}
    assert jobs == {".canary-ci-gate", "canary-ci-gate", ".canary-ci-gate-cluster", "canary-ci-gate-cluster"}
    assert schema["additionalProperties"] == {"$ref": "#/definitions/job"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("canary-ci-gate", "artifacts", "when"), "sometimes", "sometimes"),
        (("canary-ci-gate", "scripts"), ["true"], "scripts"),
        ((".canary-ci-gate", "artifacts", "reports", "junit_xml"), "x.xml", "junit_xml"),
    ],
)
def test_the_schema_rejects_wrong_keys_and_values(path: tuple[str, ...], value: object, message: str) -> None:
    document = yaml.safe_load(GITLAB.read_text())
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(document, json.loads(SCHEMA.read_text()))


def _flags(text: str) -> set[str]:
    """Options on the gate command's lines (not comments; those building `helm_args` are helm's)."""
    lines = [ln for ln in text.splitlines() if "helm_args" not in ln and not ln.lstrip().startswith("#")]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", "\n".join(lines)))


@pytest.mark.parametrize("template", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_templates_call_the_command_with_options_it_has(template: Path) -> None:
    parser = UsageErrorParser(prog="canary-ci-gate")
    add_ci_gate_flags(parser)
    known = {s for action in parser._actions for s in action.option_strings}
    text = template.read_text()
    used = _flags(text)
    assert "canary-ci-gate" in text
    assert {"--rate", "--duration", "--baseline-mode", "--candidate-mode", "--gate-file"} <= used
    assert {"--kube-namespace", "--release", "--prometheus-url"} <= used  # the cluster job
    assert used <= known, f"{sorted(used - known)} are not options of canary-ci-gate"
    # The variables the command reads from the environment are the ones the template sets.
    for variable in ("CI_GATE_RATE", "CI_GATE_DURATION", "CI_GATE_REPORTS_DIR"):
        assert variable in text


def test_github_cluster_job_writes_the_kubeconfig_secret_and_runs_instead_of_the_runner_job() -> None:
    jobs = yaml.safe_load(GITHUB.read_text())["jobs"]
    local, cluster = jobs["canary-ci-gate"], jobs["canary-ci-gate-cluster"]
    assert (
        local["if"] == "vars.CANARY_KUBE_NAMESPACE == ''"
        and cluster["if"] == "vars.CANARY_KUBE_NAMESPACE != ''"
    )
    steps = {s.get("name", s.get("uses")): s for s in cluster["steps"]}
    secret = steps["Write the kubeconfig secret to a file"]
    assert secret["env"]["KUBECONFIG_TEXT"] == "${{ secrets.CANARY_KUBECONFIG }}"
    assert 'KUBECONFIG=$RUNNER_TEMP/kubeconfig" >> "$GITHUB_ENV"' in secret["run"]
    assert "umask 077" in secret["run"]  # the credentials file is readable by the job's user only
    assert steps["Upload the report directory and JUnit XML"]["if"] == "always()"
    # The cluster job must not inherit the runner job's Locust rate as the Gateway's offered rate.
    assert "CI_GATE_RATE" in cluster["env"]


def test_gitlab_cluster_job_uses_the_file_variable_and_replaces_the_runner_job() -> None:
    document = yaml.safe_load(GITLAB.read_text())
    assert document["canary-ci-gate"]["rules"][0] == {"if": "$CANARY_KUBECONFIG", "when": "never"}
    rules = document["canary-ci-gate-cluster"]["rules"]
    assert rules and all(r["if"].startswith("$CANARY_KUBECONFIG && ") for r in rules)
    hidden = document[".canary-ci-gate-cluster"]
    assert 'export KUBECONFIG="$CANARY_KUBECONFIG"' in hidden["before_script"]
    assert any("CI_GATE_RATE= canary-ci-gate" in line for line in hidden["script"])
    assert hidden["artifacts"]["when"] == "always"
