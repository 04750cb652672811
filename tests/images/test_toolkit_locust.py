"""Locust from the toolkit image, as the chart's load Job runs it, drives load at a set rate against an
endpoint on the host and writes its summary."""

from __future__ import annotations

import json

import pytest
from image_harness import run_container

from testkit.processes import stub_server

pytestmark = [pytest.mark.images, pytest.mark.integration]

RATE = 20.0


def test_locust_in_the_image_drives_load_at_the_set_rate_and_writes_its_summary(engine, toolkit, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # written by the image's user (65532)
    with stub_server("--arm", "baseline", "--tokens", "4", "--itl-ms", "2") as url:
        proc = run_container(
            engine,
            toolkit.ref,
            "locust",
            "-f",
            "loadtest/vlm.py",
            "--headless",
            "--host",
            url,
            "--users",
            "1",
            "--spawn-rate",
            "1",
            "--run-time",
            "6s",
            "--rate",
            str(RATE),
            "--arrival",
            "constant",
            # A shared machine: behaviour, not the generator's precision (that is `make bench-loadtest`).
            "--max-lag-p99-ms",
            "1000",
            "--max-rate-error-pct",
            "50",
            "--requests-jsonl",
            "/out/requests.jsonl",
            "--summary-json",
            "/out/summary.json",
            options=("--read-only", "--tmpfs", "/tmp", "-v", f"{out}:/out"),
        )
    print(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    schedule = summary["schedule"]
    print(json.dumps(schedule, indent=1))
    assert schedule["target_rate_rps"] == pytest.approx(RATE, rel=1e-3)
    assert schedule["achieved_rate_rps"] == pytest.approx(RATE, rel=0.25)
    assert schedule["sent"] >= 0.75 * RATE * 6
    baseline = summary["arms"]["baseline"]
    assert baseline["requests"] == schedule["sent"] and baseline["failed"] == 0
    assert len((out / "requests.jsonl").read_text().splitlines()) == schedule["sent"]
