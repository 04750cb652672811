"""Every command in the README's shell blocks, run as a user types it, up to where it would start long work.

A command's long work is stopped by what a user could add too (a dry run, an unknown engine, a state
directory with no rollout, a server that is not there), never by calling its code another way; a new
command in the README fails here until it is listed below.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
THIRD_PARTY = {"helm", "kind", "ctr"}  # other projects' commands, shown for the steps around ours


def readme_commands() -> list[str]:
    """The commands of the README's `sh` blocks: continuations joined, comments dropped, and an
    alternatives word such as `argo|flagger` expanded into one command per alternative."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    commands: list[str] = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            choices = [i for i, w in enumerate(words) if "|" in w]
            variants = [words]
            if choices:
                (i,) = choices
                variants = [[*words[:i], alt, *words[i + 1 :]] for alt in words[i].split("|")]
            commands += [shlex.join(v) for v in variants]
    return commands


@dataclass(frozen=True)
class Stop:
    """How a command is kept from its long work, and what shows it got there: the exit code and a phrase
    of its output. `add` goes after the command as typed, `env` into its environment."""

    code: int
    says: str
    add: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


DRY_RUN_PLAN = "every gate can pass after"
NO_ROLLOUT = "no rollout recorded in"
# The README's commands by their leading words (the longest match wins).
STOPS: dict[str, Stop] = {
    "make canary": Stop(0, DRY_RUN_PLAN, add=("ROLLOUT_ARGS=--dry-run",)),
    "make test": Stop(0, "-m pytest", env=(("MAKEFLAGS", "-n"),)),  # what it would run; it is running
    "make status": Stop(0, NO_ROLLOUT),
    "make rollback": Stop(2, "nothing to roll back"),  # make's 2: the command's own 1
    "make pause": Stop(2, "nothing to pause"),
    "make promote": Stop(2, "nothing to promote"),
    "make images": Stop(
        2, "ENGINE='not-an-engine': use podman or docker", env=(("ENGINE", "not-an-engine"),)
    ),
    "python -m rollout down": Stop(0, "no local stack recorded"),
    "python -m rollout run": Stop(0, DRY_RUN_PLAN, add=("--dry-run",)),
    # the README's point: at the default rate a cluster's 10% step cannot show 0.1% errors in its bake
    "python -m rollout run --kube-namespace": Stop(1, "past the maximum bake of 240s", add=("--dry-run",)),
    "python -m gates --prometheus": Stop(2, "unreachable: [Errno 111] Connection refused"),
    "python -m gates export --format argo": Stop(0, "kind: AnalysisTemplate"),
    "python -m gates export --format flagger": Stop(0, "kind: MetricTemplate"),
    "python -m gates export --format flagger-analysis": Stop(0, "metrics:"),
    "canary-ci-gate": Stop(0, DRY_RUN_PLAN, add=("--dry-run",)),
    "locust -f loadtest/vlm.py": Stop(2, "cannot reach --host http://127.0.0.1:8000"),
}


def key_for(command: str) -> str | None:
    matches = [key for key in STOPS if command == key or command.startswith(key + " ")]
    return max(matches, key=len) if matches else None


OURS = [c for c in readme_commands() if c.split()[0] not in THIRD_PARTY]


def test_every_readme_command_is_listed_and_every_listed_one_is_in_the_readme():
    assert len(OURS) >= len(STOPS)
    assert [c for c in OURS if key_for(c) is None] == [], "README commands not exercised here: add to STOPS"
    assert {key_for(c) for c in OURS} == set(STOPS), "listed here but gone from the README"
    assert {c.split()[0] for c in readme_commands()} - {
        "make",
        "python",
        "canary-ci-gate",
        "locust",
    } == THIRD_PARTY


@pytest.mark.parametrize("command", OURS)
def test_a_readme_command_runs_as_typed(command: str, tmp_path: Path):
    key = key_for(command)
    assert key is not None, f"README command {command!r} is not exercised here: add it to STOPS"
    stop = STOPS[key]
    words = [*shlex.split(command), *stop.add]
    venv_bin = ROOT / ".venv" / "bin"
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",  # `python`, `locust`: the project's
        "ROLLOUT_STATE_DIR": str(tmp_path / "state"),  # no rollout of the user's or another test's
        **dict(stop.env),
    }
    # make runs in the checkout; the rest where a user keeps their files, with the load file at hand.
    cwd = ROOT if words[0] == "make" else tmp_path
    (tmp_path / "loadtest").symlink_to(ROOT / "loadtest")
    proc = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert "usage:" not in out, out[-3000:]  # the command line was accepted as written
    assert proc.returncode == stop.code and stop.says in out, (proc.returncode, out[-3000:])
