"""Real Locust (headless, standalone and master/workers) against the real stub endpoint."""

import json
import re
import time

import pytest
from loadtest_harness import LOCUST_GRACE_S, ROOT, read_jsonl, run_locust, start_locust

from testkit.processes import stop, stub_server

pytestmark = pytest.mark.integration

# The machine running the tests is shared: these runs check behaviour, not the generator's precision
# (that is `make bench-loadtest`), so the self-check limits are loose unless a test is about them.
LOOSE = ["--max-lag-p99-ms", "1000", "--max-rate-error-pct", "50"]


def documented_record_fields() -> set[str]:
    text = (ROOT / "docs" / "loadtest.md").read_text()
    section = text.split("## Per-request JSONL", 1)[1].split("## Summary JSON", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def outputs(tmp_path):
    return [
        "--requests-jsonl",
        str(tmp_path / "out" / "requests.jsonl"),
        "--summary-json",
        str(tmp_path / "out" / "summary.json"),
    ]


def test_headless_run_writes_records_and_a_summary_that_agree(tmp_path):
    with stub_server("--arm", "baseline", "--tokens", "6", "--itl-ms", "2") as url:
        code, log = run_locust(
            [
                "--headless",
                "--host",
                url,
                "--rate",
                "25",
                "--arrival",
                "constant",
                "-t",
                "4s",
                *LOOSE,
                *outputs(tmp_path),
            ],
            tmp_path,
        )
    assert code == 0, log
    records = read_jsonl(tmp_path / "out" / "requests.jsonl")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(records[0]) == documented_record_fields()
    assert len(records) == summary["schedule"]["sent"] == summary["arms"]["all"]["requests"] >= 50
    assert summary["schedule"]["target_rate_rps"] == pytest.approx(25.0, rel=1e-3)
    assert set(summary["arms"]) == {"baseline", "all"}
    for r in records:
        assert r["ok"] and r["arm"] == "baseline" and r["output_tokens"] == 6 and r["usage_reported"]
        assert 0 < r["ttft_ms"] <= r["e2e_ms"]
        assert r["ttft_sched_ms"] == pytest.approx(r["ttft_ms"] + r["lag_ms"], abs=1e-3)
        assert r["sent_at"] >= r["scheduled_at"] and len(r["itl_ms"]) == 5
    assert sorted(r["seq"] for r in records) == list(range(len(records)))
    assert summary["arms"]["baseline"]["ttft_ms"]["count"] == len(records)
    assert "open-loop summary" in log


def test_failures_are_classified_and_a_missed_slo_exits_4(tmp_path):
    with stub_server(
        "--tokens", "4", "--http-error-every", "5", "--stream-error-every", "7", "--drop-done-every", "11"
    ) as url:
        code, log = run_locust(
            [
                "--headless",
                "--host",
                url,
                "--rate",
                "30",
                "-t",
                "3s",
                "--slo",
                "error_rate<=0.01",
                *LOOSE,
                *outputs(tmp_path),
            ],
            tmp_path,
        )
    assert code == 4, log
    records = read_jsonl(tmp_path / "out" / "requests.jsonl")
    kinds = {r["error_kind"] for r in records if not r["ok"]}
    assert kinds == {"http", "stream_error", "missing_done"}
    http = next(r for r in records if r["error_kind"] == "http")
    assert http["status"] == 503 and "stub overloaded" in http["error"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["arms"]) == {"unknown", "all"}  # the stub named no arm
    assert summary["slo"]["ok"] is False and summary["exit_code"] == 4
    assert sum(summary["arms"]["all"]["errors"].values()) == sum(not r["ok"] for r in records)


def test_sigterm_mid_run_drains_in_flight_requests_and_writes_the_summary(tmp_path):
    jsonl = tmp_path / "out" / "requests.jsonl"
    with stub_server("--arm", "canary", "--tokens", "5", "--itl-ms", "100") as url:
        proc = start_locust(
            ["--headless", "--host", url, "--rate", "10", *LOOSE, *outputs(tmp_path)], tmp_path / "run.log"
        )
        try:
            deadline = time.monotonic() + 45
            while not (jsonl.exists() and len(read_jsonl(jsonl)) >= 3):  # readable while the run goes on
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()
                time.sleep(0.2)
            stop(proc, grace_s=LOCUST_GRACE_S)
        finally:
            stop(proc, grace_s=LOCUST_GRACE_S)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    records = read_jsonl(jsonl)
    assert len(records) == summary["schedule"]["sent"] >= 3
    assert summary["arms"]["canary"]["cancelled"] == 0  # drained, not cut off
    assert all(r["ok"] and r["e2e_ms"] >= 400 for r in records)


def test_master_and_workers_split_one_schedule_and_end_after_the_last_stage(tmp_path):
    port = str(__import__("infra.net", fromlist=["free_port"]).free_port())
    with stub_server("--arm", "baseline", "--tokens", "3", "--http-error-every", "9") as url:
        workers = [
            start_locust(["--worker", "--master-port", port], tmp_path / f"worker{i}.log") for i in range(2)
        ]
        try:
            code, log = run_locust(
                [
                    "--master",
                    "--master-bind-port",
                    port,
                    "--expect-workers",
                    "2",
                    "--headless",
                    "--host",
                    url,
                    "--stages",
                    "warmup:1s@10,measure:2s@20",
                    "--arrival",
                    "constant",
                    "--start-delay",
                    "1",
                    *LOOSE,
                    *outputs(tmp_path),
                ],
                tmp_path,
                timeout_s=90,
            )
        finally:
            for worker in workers:
                stop(worker, grace_s=LOCUST_GRACE_S)
    assert code == 1, log  # request failures and no --slo: Locust's convention
    assert "schedule complete" in log
    records = read_jsonl(tmp_path / "out" / "requests.jsonl")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["workers"] == 2
    assert summary["schedule"]["scheduled"] == 50
    assert sorted(r["seq"] for r in records) == list(range(50))
    for rank in (0, 1):
        assert {r["seq"] % 2 for r in records if r["worker"] == rank} == {rank}
    assert summary["arms"]["all"]["requests"] == 40  # the 10 warmup requests are not measured
    assert [s["name"] for s in summary["schedule"]["stages"]] == ["warmup", "measure"]


def test_a_generator_that_cannot_keep_up_exits_3(tmp_path):
    with stub_server("--tokens", "5", "--itl-ms", "200") as url:
        code, log = run_locust(
            [
                "--headless",
                "--host",
                url,
                "--rate",
                "20",
                "-t",
                "3s",
                "--max-in-flight",
                "2",
                *outputs(tmp_path),
            ],
            tmp_path,
        )
    assert code == 3, log
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["schedule"]["dropped_in_flight"] > 20
    assert summary["self_check"]["ok"] is False


@pytest.mark.parametrize(
    "args,message",
    [
        (["--host", "http://127.0.0.1:9", "-t", "5s"], "cannot reach --host http://127.0.0.1:9"),
        (
            ["--host", "http://127.0.0.1:9", "--arrival", "bursty"],
            "argument --arrival: invalid choice: 'bursty'",
        ),
        (["--host", "http://127.0.0.1:9", "--dataset", "DATASET"], "line 2: not JSON"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, message):
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"prompt": "ok"}\n{"prompt": \n')
    args = [str(dataset) if a == "DATASET" else a for a in args]
    code, log = run_locust(["--headless", *args], tmp_path)
    assert code == 2, log
    assert message in log
    assert "Traceback" not in log


def test_an_unwritable_output_path_is_one_clear_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with stub_server() as url:
        code, log = run_locust(
            ["--headless", "--host", url, "-t", "5s", "--requests-jsonl", str(blocker / "r.jsonl")], tmp_path
        )
    assert code == 2, log
    assert f"cannot write --requests-jsonl {blocker / 'r.jsonl'}" in log
    assert "Traceback" not in log


def test_python_m_loadtest_help_lists_every_option():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "loadtest", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    for flag in (
        "--rate",
        "--arrival",
        "--stages",
        "--max-in-flight",
        "--requests-jsonl",
        "--summary-json",
        "--slo",
    ):
        assert flag in out
    assert "LOCUST_RATE" in out and "--headless" in out


def test_requests_outlasting_the_drain_are_recorded_as_cancelled_not_failed(tmp_path):
    jsonl = tmp_path / "out" / "requests.jsonl"
    with stub_server("--tokens", "20", "--itl-ms", "200") as url:  # 4 s streams
        proc = start_locust(
            [
                "--headless",
                "--host",
                url,
                "--rate",
                "5",
                "--drain-timeout",
                "0.5",
                *LOOSE,
                *outputs(tmp_path),
            ],
            tmp_path / "run.log",
        )
        try:
            time.sleep(6)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
        finally:
            stop(proc, grace_s=LOCUST_GRACE_S)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    records = read_jsonl(jsonl)
    cancelled = [r for r in records if r["error_kind"] == "cancelled"]
    assert cancelled and all(r["status"] == 200 and not r["ok"] for r in cancelled)
    assert summary["arms"]["all"]["cancelled"] == len(cancelled)
    assert summary["arms"]["all"]["failed"] == 0


def test_a_dataset_drives_the_requests_in_order(tmp_path):
    from loadtest.payloads import synthetic_image

    synthetic_image(64, 32, 1).save(tmp_path / "a.jpg")
    synthetic_image(32, 64, 2).save(tmp_path / "b.png")
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        '{"prompt": "two images", "images": ["a.jpg", "b.png"], "max_tokens": 3}\n{"prompt": "text only"}\n'
    )
    with stub_server("--arm", "baseline") as url:
        code, log = run_locust(
            [
                "--headless",
                "--host",
                url,
                "--rate",
                "10",
                "-t",
                "3s",
                "--dataset",
                str(dataset),
                "--max-tokens",
                "5",
            ]
            + [*LOOSE, *outputs(tmp_path)],
            tmp_path,
        )
    assert code == 0, log
    records = read_jsonl(tmp_path / "out" / "requests.jsonl")
    assert len(records) >= 10
    for r in records:
        # the stub answers with as many tokens as the request's max_tokens
        assert (r["images"], r["output_tokens"]) == ((2, 3) if r["seq"] % 2 == 0 else (0, 5))
