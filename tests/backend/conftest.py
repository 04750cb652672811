"""Shared fixtures for the backend tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # backend_testlib (a uniquely named helper module)

from backend_testlib import Server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def tp2_server(tmp_path_factory: pytest.TempPathFactory):
    """A TP=2 server in the default mode (per_rank), shared by the read-mostly tests (starting one costs
    seconds of CPU on a 2-core machine). Tests that change its faults restore them."""
    with running_server(
        tmp_path_factory.mktemp("backend"), "--tp-size", "2", "--cpu-cores", "1.5", "--step-cost-ms", "0.5"
    ) as server:
        yield server


@pytest.fixture
def server(tp2_server: Server) -> Server:
    assert tp2_server.proc.poll() is None, f"backend exited early:\n{tp2_server.log()}"
    return tp2_server
