"""`make images` (images/build.sh) and the Dockerfiles: a clear one-line refusal without a Docker engine,
and the right two builds where one answers (a recording stand-in for the docker CLI)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "images" / "build.sh"


def _run(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env_extra}
    return subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )


def _fake_docker(tmp_path: Path, *, engine_up: bool) -> Path:
    log = tmp_path / "docker.log"
    script = tmp_path / "docker"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        'if [ "$1" = info ]; then\n'
        + (
            "  exit 0\n"
            if engine_up
            else '  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1\n'
        )
        + "fi\n"
        'if [ "$1" = build ]; then ctx="${@: -1}"; ls -A "$ctx" | sort | tr "\\n" " " >> '
        f"{log}; echo >> {log}; fi\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_no_docker_command_is_one_clear_line(tmp_path):
    proc = _run({"DOCKER": str(tmp_path / "no-such-docker")}, tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make images: cannot build: no ") and "command" in lines[0]


def test_no_engine_is_one_clear_line(tmp_path):
    proc = _run({"DOCKER": str(_fake_docker(tmp_path, engine_up=False))}, tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no Docker engine answers" in lines[0] and "Cannot connect to the Docker daemon" in lines[0]


def test_builds_baseline_then_candidate_from_a_minimal_context(tmp_path):
    proc = _run({"DOCKER": str(_fake_docker(tmp_path, engine_up=True))}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert calls[0] == "info"
    builds = [c for c in calls if c.startswith("build")]
    assert len(builds) == 2
    assert (
        "SGLANG_IMAGE=lmsysorg/sglang:v0.5.23" in builds[0]
        and "-t sglang-vlm-canary/baseline:0.5.23" in builds[0]
    )
    assert "BASELINE_IMAGE=sglang-vlm-canary/baseline:0.5.23" in builds[1]
    assert "-t sglang-vlm-canary/candidate:0.5.23" in builds[1]
    contexts = [c for c in calls if not c.startswith(("info", "build"))]
    assert contexts[1].split() == ["mminputs", "pyproject.toml", "sglang_plugin"]


def test_dockerfiles_pin_upstream_and_enable_the_hook():
    baseline = (REPO / "images/baseline/Dockerfile").read_text()
    candidate = (REPO / "images/candidate/Dockerfile").read_text()
    assert re.search(r"^ARG SGLANG_IMAGE=lmsysorg/sglang:v0\.5\.23$", baseline, re.M)
    assert "FROM ${SGLANG_IMAGE}" in baseline
    assert "FROM ${BASELINE_IMAGE}" in candidate
    assert "pip install --no-deps" in candidate and "python3 -m sglang_plugin check --installed" in candidate
    assert re.search(r"^ENV SGLANG_MM_INPUT_MODE=sharded$", candidate, re.M)


def test_candidate_packaging_registers_the_same_entry_point_as_the_repository():
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())
    image = tomllib.loads((REPO / "images/candidate/pyproject.toml").read_text())
    group = "sglang.srt.plugins"
    assert image["project"]["entry-points"][group] == ours["project"]["entry-points"][group]
    assert set(image["tool"]["setuptools"]["packages"]["find"]["include"]) == {"sglang_plugin*", "mminputs*"}
