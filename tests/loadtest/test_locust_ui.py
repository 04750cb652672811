"""Token timings and the open-loop self-check as rows of Locust's own statistics, checked where Locust
users read them: the web UI as headless Chromium renders it, `/stats/requests`, `--csv` and `--html`.

Real parts: two embedded backends behind the local router at 50/50 (the canary with a rehearsal delay
before its first token), Locust running loadtest/vlm.py, Chromium. Every row is compared with the run's
own per-request JSONL and summary, so a row that counts the wrong samples or the wrong arm fails.

`LOADTEST_UI_SCREENSHOT=docs/loadtest-ui.png` keeps the screenshot (the one docs/loadtest.md shows).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from html import unescape
from pathlib import Path

import pytest
from loadtest_harness import (
    BACKEND_MODEL,
    LOCUST_GRACE_S,
    ROOT,
    read_jsonl,
    run_locust,
    start_locust,
    two_arm_stack,
)
from PIL import Image

from infra.net import free_port, wait_http_ok
from testkit.processes import stop

pytestmark = pytest.mark.integration

CANARY_DELAY_MS = 30  # the canary's rehearsal fault, added before a request reaches its scheduler
ARMS = ("baseline", "canary")
SELF_CHECK = ("lag", "late", "dropped_in_flight", "dropped_too_late")
WINDOW = (1600, 1000)
# Loose self-check limits: the machine is shared, and these runs check the rows, not the generator.
LOAD = ["--model", BACKEND_MODEL, "--max-tokens", "8", "--arrival", "constant", "--max-lag-p99-ms", "1000",
        "--max-rate-error-pct", "100"]  # fmt: skip
SCREENSHOT_ENV = "LOADTEST_UI_SCREENSHOT"


@pytest.fixture(scope="module")
def router_url(tmp_path_factory):
    delay = ("--fault-extra-latency-ms", str(CANARY_DELAY_MS))
    with two_arm_stack(tmp_path_factory.mktemp("stack"), canary_args=delay) as url:
        yield url


def outputs(out: Path) -> list[str]:
    return ["--requests-jsonl", str(out / "requests.jsonl"), "--summary-json", str(out / "summary.json")]


def expected_rows(records: list[dict], summary: dict) -> dict[tuple[str, str], tuple[int, float | None]]:
    """(type, name) -> (samples, mean or None when only the count is known), from the run's own outputs."""
    samples: dict[tuple[str, str], list[float]] = {}
    for arm in ARMS:
        ok = [r for r in records if r["arm"] == arm and r["ok"]]
        samples[("TTFT", arm)] = [r["ttft_ms"] for r in ok]
        samples[("ITL", arm)] = [gap for r in ok for gap in r["itl_ms"]]
        samples[("TPOT", arm)] = [r["tpot_ms"] for r in ok if r["tpot_ms"] is not None]
    samples[("SCHED", "lag")] = [r["lag_ms"] for r in records]
    samples[("SCHED", "late")] = [r["lag_ms"] for r in records if r["late"]]
    rows = {key: (len(v), sum(v) / len(v) if v else None) for key, v in samples.items()}
    schedule = summary["schedule"]
    assert rows[("SCHED", "lag")][0] == schedule["sent"] and rows[("SCHED", "late")][0] == schedule["late"]
    for kind in ("dropped_in_flight", "dropped_too_late"):
        rows[("SCHED", kind)] = (schedule[kind], None)
    return rows


def check_rows(actual: dict[tuple[str, str], tuple[int, float]], records: list[dict], summary: dict) -> None:
    """Locust's rows (count, average) against the records; the Aggregated row counts real requests only."""
    for key, (count, average) in expected_rows(records, summary).items():
        assert key in actual, f"no {key} row in {sorted(actual)}"
        assert actual[key][0] == count, key
        if average is not None:
            assert actual[key][1] == pytest.approx(average, abs=1e-6), key
    requests = [r for r in records if r["error_kind"] != "cancelled"]
    post = actual[("POST", "/v1/chat/completions")]
    assert post[0] == actual[("", "Aggregated")][0] == len(requests) > 0
    assert actual[("", "Aggregated")][1] == pytest.approx(post[1], abs=1e-6)  # e2e only, no token sample
    for r in records:
        assert 0 < r["ttft_ms"] <= r["e2e_ms"] and r["arm"] in ARMS
    for arm in ARMS:
        e2e = [r["e2e_ms"] for r in records if r["arm"] == arm]
        assert actual[("TTFT", arm)][1] < sum(e2e) / len(e2e)
    # The arm names reach the rows: the canary's delay shows in its TTFT row and in no other.
    assert actual[("TTFT", "canary")][1] - actual[("TTFT", "baseline")][1] > CANARY_DELAY_MS * 2 / 3


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh (Debian package chromium)")
    # --no-sandbox: Chromium's sandbox refuses to run as root; a profile of its own per test, so
    # concurrent runs do not share (and lock) one. The virtual-time budget lets the page's
    # JavaScript fetch and render the statistics before the snapshot is taken.
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def ui_table(dom: str) -> dict[tuple[str, str], dict[str, str]]:
    """The statistics table as rendered: (type, name) -> {column header: cell text}."""
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", dom, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        rows.append([unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    header, *body = rows
    return {(cells[0], cells[1]): dict(zip(header, cells, strict=True)) for cells in body}


def test_web_ui_shows_token_and_self_check_rows(router_url, tmp_path):
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    log = tmp_path / "locust.log"
    proc = start_locust(
        ["--host", router_url, "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart",
         "--stages", "main:4s@10", *LOAD, *outputs(out)],
        log,
    )  # fmt: skip
    try:
        wait_http_ok(web + "/", 30, alive=lambda: proc.poll() is None)
        # The stages end the test by themselves; the summary is written once the drain is over.
        deadline = time.monotonic() + 45
        while not (out / "summary.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        summary = json.loads((out / "summary.json").read_text())
        while (stats := get_json(web + "/stats/requests"))["state"] != "stopped" or not any(
            (s["method"], s["name"]) == ("SCHED", "lag") and s["num_requests"] == summary["schedule"]["sent"]
            for s in stats["stats"]
        ):  # the endpoint caches its answer for a moment
            assert time.monotonic() < deadline, stats
            time.sleep(0.5)
        png = tmp_path / "ui.png"
        chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={png}", web + "/")
        dom = chromium(tmp_path, "--dump-dom", web + "/").stdout
    finally:
        stop(proc, grace_s=LOCUST_GRACE_S)
    assert proc.returncode == 0, log.read_text()

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == WINDOW
        colors = image.convert("RGB").getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    assert len(colors) > 100, "the screenshot is (nearly) blank"
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(png, ROOT / os.environ[SCREENSHOT_ENV])

    records = read_jsonl(out / "requests.jsonl")
    rows = {(s["method"], s["name"]): (s["num_requests"], s["avg_response_time"]) for s in stats["stats"]}
    check_rows(rows, records, summary)
    assert stats["fail_ratio"] == 0 and summary["schedule"]["sent"] == 40
    for name in SELF_CHECK:  # a run that kept up shows its self-check rows, at zero where nothing happened
        assert ("SCHED", name) in rows
    # What the page shows: the same rows and counts in the rendered table.
    table = ui_table(dom)
    assert set(table) == set(rows)
    for key, (count, _) in rows.items():
        assert int(table[key]["# Requests"]) == count, key


def report_rows(html: str) -> dict[tuple[str, str], tuple[int, float]]:
    """The rows of Locust's --html report (the statistics it embeds for its page to render)."""
    marker = "window.templateArgs = "
    args, _ = json.JSONDecoder().raw_decode(html, html.index(marker) + len(marker))
    return {
        (s["method"], s["name"]): (s["num_requests"], s["avg_response_time"])
        for s in args["requests_statistics"]
    }


def test_csv_and_html_reports_carry_the_rows_with_drops_and_late_sends(router_url, tmp_path):
    out = tmp_path / "out"
    # One request in flight at a time, every 25 ms: each canary request (>= 30 ms) makes the next
    # arrival drop; --late-ms 0 counts every send as late. Both self-check rows then have samples.
    code, log = run_locust(
        ["--headless", "--host", router_url, "--rate", "40", "-t", "3s", "--max-in-flight", "1",
         "--late-ms", "0", *LOAD, *outputs(out), "--csv", str(out / "run"), "--html", str(out / "report.html")],
        tmp_path,
    )  # fmt: skip
    assert code == 0, log
    records = read_jsonl(out / "requests.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schedule"]["dropped_in_flight"] > 0 and summary["schedule"]["late"] > 0

    with open(out / "run_stats.csv", newline="") as handle:
        csv_rows = {
            (row["Type"], row["Name"]): (int(row["Request Count"]), float(row["Average Response Time"]))
            for row in csv.DictReader(handle)
        }
    check_rows(csv_rows, records, summary)
    html_rows = report_rows((out / "report.html").read_text())
    check_rows(html_rows, records, summary)
    assert html_rows.keys() == csv_rows.keys()
