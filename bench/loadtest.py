"""Benchmarks of the load generator itself (`make bench-loadtest`, or `python -m bench.loadtest`).

Scenarios, each against a fresh local endpoint, Locust (`locust -f loadtest/vlm.py`, one process)
side by side with the asyncio reference client on the same schedule and bodies:
- `rate300`: 300 requests/s Poisson, 448x448 JPEG images, against the minimal stub endpoint.
- `hd50`: 50 requests/s with unique 1920x1080 JPEG images, against the stub.
- `ttft-stub`: client TTFT vs the stub's own per-request TTFT (joined by response id).
- `ttft-backend`: client TTFT vs the embedded backend's own `sglang:time_to_first_token_seconds`,
  per request (requests do not overlap; /metrics is polled between them) and as exact means.
Prints a table and writes JSON under reports/bench-loadtest/. Run it on a quiet machine: the load
average is recorded next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.net import free_port, wait_http_ok
from loadtest.payloads import RequestShape, SyntheticBodies, parse_image_sizes
from loadtest.schedule import Schedule
from loadtest.summary import RunSummary
from testkit.reference_client import run_reference

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("rate300", "hd50", "ttft-stub", "ttft-backend")


@dataclass(frozen=True)
class Workload:
    rate: float
    arrival: str
    image_sizes: str
    max_tokens: int
    seed: int = 1
    unique_image_share: float = 1.0
    model: str = "default"


@dataclass
class Row:
    scenario: str
    client: str
    busy_before: float  # cores busy with other work just before the run
    summary: dict[str, Any]
    cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _log(message: str) -> None:
    print(f"[bench-loadtest {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def _server(command: list[str], health_path: str, port: int, timeout_s: float = 120) -> Iterator[str]:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + health_path, timeout_s, alive=lambda: proc.poll() is None)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stub(*args: str) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    return _server([sys.executable, "-m", "testkit.stub_server", "--port", str(port), *args], "/health", port)


def backend() -> contextlib.AbstractContextManager[str]:
    port = free_port()
    command = [sys.executable, "-m", "backend", "--model-path", "bench-vlm", "--tp-size", "1"]
    return _server([*command, "--port", str(port), "--enable-metrics"], "/health", port, timeout_s=180)


def _busy_cores(window_s: float = 3.0) -> float:
    """Cores busy across the machine over a short window (from /proc/stat)."""

    def sample() -> tuple[float, float]:
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(window_s)
    busy1, total1 = sample()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_for_quiet(max_busy_cores: float, timeout_s: float) -> float:
    """Wait until other work leaves the machine nearly idle; returns the busy cores last seen."""
    deadline = time.monotonic() + timeout_s
    busy = _busy_cores()
    while busy > max_busy_cores and time.monotonic() < deadline:
        _log(f"waiting for a quiet machine: {busy:.2f} cores busy (want <= {max_busy_cores})")
        busy = _busy_cores(10.0)
    return busy


_QUIET = {"max_busy_cores": float("inf"), "timeout_s": 0.0}


def _before_run() -> float:
    """Busy cores just before a run (after waiting for quiet when asked)."""
    if _QUIET["timeout_s"] > 0:
        return wait_for_quiet(_QUIET["max_busy_cores"], _QUIET["timeout_s"])
    return _busy_cores(1.0)


def _load_text(busy: float) -> str:
    return f"{busy:.2f} cores busy before the run, load average {os.getloadavg()[0]:.2f}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_locust(
    url: str, work: Workload, duration_s: float, workdir: Path, extra: tuple[str, ...] = ()
) -> tuple[dict, list]:
    jsonl, summary = workdir / "requests.jsonl", workdir / "summary.json"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "vlm.py"), "--headless", "--only-summary",
        "--host", url, "--rate", str(work.rate), "--arrival", work.arrival, "--seed", str(work.seed),
        "--image-sizes", work.image_sizes, "--max-tokens", str(work.max_tokens), "--model", work.model,
        "--unique-image-share", str(work.unique_image_share), "-t", f"{duration_s:g}s",
        "--requests-jsonl", str(jsonl), "--summary-json", str(summary), "--loglevel", "WARNING", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=duration_s + 120)
    if not summary.exists():
        raise RuntimeError(f"locust wrote no summary (exit {result.returncode}): {result.stderr[-2000:]}")
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return json.loads(summary.read_text()), records


def run_reference_client(url: str, work: Workload, duration_s: float) -> tuple[dict, list]:
    schedule = Schedule.open_ended(work.rate, work.arrival, 1.0, work.seed)
    shape = RequestShape(work.model, work.max_tokens, "Describe this image in detail.", {})
    bodies = SyntheticBodies(
        shape, parse_image_sizes(work.image_sizes), "jpeg", 1, 8, work.unique_image_share, work.seed
    )
    started = time.time()
    records, counters = asyncio.run(
        run_reference(
            url=url + "/v1/chat/completions",
            arrivals=schedule.arrivals(),
            duration_s=duration_s,
            body_for=bodies.body,
        )
    )
    summary = RunSummary({"max_rate_error_pct": 2.0, "max_lag_p99_ms": 10.0}, work.rate, ())
    summary.add_records(records)
    summary.set_counters(0, counters)
    return summary.render(started, time.time()), records


def side_by_side(name: str, url_factory: Any, work: Workload, duration_s: float) -> list[Row]:
    rows = []
    for client in ("locust", "reference"):
        load = _before_run()
        with url_factory() as url, tempfile.TemporaryDirectory() as tmp:
            _log(f"{name}: {client} at {work.rate:g} req/s for {duration_s:g}s ({_load_text(load)})")
            if client == "locust":
                before = _children_cpu()
                summary, _ = run_locust(url, work, duration_s, Path(tmp))
                cpu = _children_cpu() - before
            else:
                before = _self_cpu()
                summary, _ = run_reference_client(url, work, duration_s)
                cpu = _self_cpu() - before
            rows.append(Row(name, client, load, summary, cpu))
            _log(f"{name}: {client} done: {_brief(summary)}")
    return rows


def _brief(summary: dict) -> str:
    s = summary["schedule"]
    return (
        f"target {s['target_rate_rps']} achieved {s['achieved_rate_rps']} ({s['rate_error_pct']}%), "
        f"lag p99 {s['lag_ms']['p99']} ms, dropped {s['dropped_in_flight'] + s['dropped_too_late']}, "
        f"self-check {summary['self_check']['ok']}"
    )


def ttft_vs_stub(duration_s: float) -> list[Row]:
    work = Workload(rate=20, arrival="poisson", image_sizes="448x448", max_tokens=8)
    rows = []
    for client in ("locust", "reference"):
        load = _before_run()
        with (
            stub("--tokens", "8", "--ttft-ms", "20", "--itl-ms", "2") as url,
            tempfile.TemporaryDirectory() as tmp,
        ):
            _log(f"ttft-stub: {client} at 20 req/s for {duration_s:g}s ({_load_text(load)})")
            if client == "locust":
                summary, records = run_locust(url, work, duration_s, Path(tmp))
            else:
                summary, records = run_reference_client(url, work, duration_s)
            with urllib.request.urlopen(url + "/stub/timings", timeout=10) as response:
                server = json.load(response)
            pairs = [
                (r["ttft_ms"], server[r["response_id"]]["ttft_ms"])
                for r in records
                if r["ok"] and r["response_id"] in server
            ]
            rows.append(Row("ttft-stub", client, load, summary, 0.0, _ttft_comparison(pairs)))
            _log(f"ttft-stub: {client}: {rows[-1].extra}")
    return rows


def _ttft_comparison(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    if not pairs:
        return {"pairs": 0}
    client = [c for c, _ in pairs]
    server = [s for _, s in pairs]
    return {
        "pairs": len(pairs),
        "client_ttft_p50_ms": round(statistics.median(client), 3),
        "server_ttft_p50_ms": round(statistics.median(server), 3),
        "p50_difference_ms": round(statistics.median(client) - statistics.median(server), 3),
        "median_per_request_difference_ms": round(statistics.median(c - s for c, s in pairs), 3),
    }


_TTFT_LINE = re.compile(
    r'^sglang:time_to_first_token_seconds_(sum|count)\{[^}]*is_streaming="true"[^}]*\} (\S+)$', re.M
)


def _ttft_sum_count(url: str) -> tuple[float, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {"sum": 0.0, "count": 0.0}
    for kind, value in _TTFT_LINE.findall(text):
        values[kind] += float(value)
    return values["sum"], values["count"]


def _poll_ttft(url: str, stop: threading.Event, increments: list[float]) -> None:
    """Per-request server TTFTs (ms), in order, from successive /metrics scrapes."""
    last_sum, last_count = _ttft_sum_count(url)
    while not stop.is_set():
        time.sleep(0.01)
        total, count = _ttft_sum_count(url)
        if count == last_count + 1:
            increments.append((total - last_sum) * 1000.0)
        elif count > last_count + 1:
            increments.extend([float("nan")] * int(count - last_count))  # not attributable; keep the order
        last_sum, last_count = total, count


def ttft_vs_backend(duration_s: float) -> list[Row]:
    """Constant 2 req/s so requests never overlap; each increment of the server's TTFT count is one request."""
    work = Workload(rate=2, arrival="constant", image_sizes="448x448", max_tokens=8, model="bench-vlm")
    rows: list[Row] = []
    try:
        context = backend()
        url = context.__enter__()
    except Exception as exc:  # the embedded backend is another package; report, do not fail the others
        _log(f"ttft-backend: embedded backend did not start ({exc}); skipped")
        return rows
    try:
        for client in ("locust", "reference"):
            load = _busy_cores(1.0)  # the idle backend is running already
            _log(f"ttft-backend: {client} at 2 req/s for {duration_s:g}s ({_load_text(load)})")
            increments: list[float] = []
            stop = threading.Event()

            sum0, count0 = _ttft_sum_count(url)
            poller = threading.Thread(target=_poll_ttft, args=(url, stop, increments), daemon=True)
            poller.start()
            with tempfile.TemporaryDirectory() as tmp:
                if client == "locust":
                    summary, records = run_locust(url, work, duration_s, Path(tmp))
                else:
                    summary, records = run_reference_client(url, work, duration_s)
            time.sleep(0.3)
            stop.set()
            poller.join()
            sum1, count1 = _ttft_sum_count(url)
            ordered = sorted((r for r in records if r["ok"]), key=lambda r: r["seq"])
            pairs = [(r["ttft_ms"], s) for r, s in zip(ordered, increments, strict=False) if s == s]
            extra = _ttft_comparison(pairs)
            served = count1 - count0
            extra["server_requests"] = served
            extra["client_ttft_mean_ms"] = (
                round(statistics.fmean(r["ttft_ms"] for r in ordered), 3) if ordered else None
            )
            extra["server_ttft_mean_ms"] = round((sum1 - sum0) / served * 1000.0, 3) if served else None
            rows.append(Row("ttft-backend", client, load, summary, 0.0, extra))
            _log(f"ttft-backend: {client}: {extra}")
    finally:
        context.__exit__(None, None, None)
    return rows


def render_table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<13}{'client':<10}{'busy':>5}{'target':>9}{'achieved':>9}{'err%':>7}{'lag p50':>9}"
        f"{'lag p99':>9}{'dropped':>8}{'ttft p50':>9}{'ttft p99':>9}{'e2e p50':>9}{'cpu s':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        s, all_arms = row.summary["schedule"], row.summary["arms"]["all"]
        lines.append(
            f"{row.scenario:<13}{row.client:<10}{row.busy_before:>5.2f}{_f(s['target_rate_rps'])}"
            f"{_f(s['achieved_rate_rps'])}{_f(s['rate_error_pct'], 7)}{_f(s['lag_ms']['p50'])}{_f(s['lag_ms']['p99'])}"
            f"{s['dropped_in_flight'] + s['dropped_too_late']:>8}{_f(all_arms['ttft_ms']['p50'])}"
            f"{_f(all_arms['ttft_ms']['p99'])}{_f(all_arms['e2e_ms']['p50'])}{_f(row.cpu_s, 7)}"
        )
        if row.extra:
            lines.append(f"{'':<23}TTFT vs server: {row.extra}")
    return "\n".join(lines)


def _f(value: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (default 30)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench-loadtest"))
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=None,
        help="before each run wait until at most this many cores are busy with other work",
    )
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="seconds to wait for quiet per run")
    args = parser.parse_args(argv)
    if args.quiet_cores is not None:
        _QUIET.update(max_busy_cores=args.quiet_cores, timeout_s=args.quiet_wait)
    chosen = args.scenario or list(SCENARIOS)
    _log(f"scenarios {', '.join(chosen)}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    if "rate300" in chosen:
        work = Workload(rate=300, arrival="poisson", image_sizes="448x448", max_tokens=8)
        rows += side_by_side("rate300", lambda: stub("--tokens", "8", "--itl-ms", "2"), work, args.duration)
    if "hd50" in chosen:
        work = Workload(rate=50, arrival="poisson", image_sizes="1920x1080", max_tokens=8)
        rows += side_by_side("hd50", lambda: stub("--tokens", "8", "--itl-ms", "2"), work, args.duration)
    if "ttft-stub" in chosen:
        rows += ttft_vs_stub(min(args.duration, 20.0))
    if "ttft-backend" in chosen:
        rows += ttft_vs_backend(min(args.duration, 20.0))
    table = render_table(rows)
    print(table, flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = Path(args.out) / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps([vars(r) for r in rows], indent=1, default=str))
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
