"""Helpers of the images tier (imported by name: conftest puts this folder on sys.path)."""

from __future__ import annotations

import subprocess
from types import ModuleType
from typing import Any

from helm_chart_render import load_tool

# Images only the tests build (the stand-in sglang and the arms built on it), apart from `make images`'s.
TEST_REPOSITORY = "localhost/sglang-vlm-canary-test"


def images_tool() -> ModuleType:
    """tools/images.py, the one implementation of the builds (and of the engine settings)."""
    return load_tool("images")


def run_container(
    engine: Any, image: str, *command: str, options: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` on the host network (images/containers.conf), as the image's own user."""
    return engine.run("run", "--rm", *options, image, *command, check=False, timeout=timeout)


def installed_distributions(engine: Any, image: str, python: str = "python") -> dict[str, str]:
    """canonical name -> version of every distribution the image's Python sees."""
    script = (
        "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'], d.version)\n"
    )
    proc = run_container(engine, image, python, "-c", script)
    assert proc.returncode == 0, proc.stderr
    tool = images_tool()
    return {
        tool.canonical(name): version for name, version in (line.split() for line in proc.stdout.splitlines())
    }
