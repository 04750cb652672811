"""Shared fixtures: the real sglang 0.5.23 wheel (fetched into .cache/ by the test set-up) and the harness sglang tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sglang_plugin import wheel

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "harness"


@pytest.fixture(scope="session")
def sglang_wheel() -> Path:
    """The pinned wheel from PyPI, fetched by the test set-up (never here) and checked by hash."""
    return wheel.cached_wheel(REPO / wheel.DEFAULT_CACHE_DIR)


@pytest.fixture(scope="session")
def wheel_sources(sglang_wheel: Path) -> dict[str, str]:
    return wheel.read_sources(sglang_wheel)


@pytest.fixture
def harness_sglang():
    """Import the harness `sglang` package in this process; removed again afterwards."""
    sys.path.insert(0, str(HARNESS))
    try:
        import sglang.srt.managers.scheduler as scheduler_module

        yield scheduler_module
    finally:
        sys.path.remove(str(HARNESS))
        for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[name]
