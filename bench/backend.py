"""Resource use of the embedded backend: CPU per process and RSS at idle and under open-loop VLM load.

    python -m bench.backend [--tp-size 2] [--modes per_rank,sharded] [--rate 2] [--duration 20] [--idle 10]

For each mode it starts a real server (`python -m backend`), samples `backend_process_cpu_seconds_total`
and `backend_process_resident_memory_bytes` per `rank` from its /metrics over an idle window, then over a
window of streaming chat requests (one image each) sent at a constant rate whatever the server does,
prints a table and writes it (JSON and Markdown) under reports/bench-backend/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from infra.net import free_port, wait_http_ok
from testkit.images import synthetic_frame


@dataclass(frozen=True)
class Window:
    seconds: float
    cpu_percent: dict[str, float]  # rank label -> % of one core
    rss_mib: dict[str, float]


@dataclass(frozen=True)
class LoadResult:
    sent: int
    ok: int
    failed: int
    p50_s: float | None
    p99_s: float | None


@dataclass(frozen=True)
class ModeResult:
    mode: str
    idle: Window
    load: Window
    load_result: LoadResult


async def _process_samples(
    session: aiohttp.ClientSession, url: str
) -> tuple[dict[str, float], dict[str, float]]:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "backend_process_cpu_seconds_total":
                cpu[s.labels["rank"]] = s.value
            elif s.name == "backend_process_resident_memory_bytes":
                rss[s.labels["rank"]] = s.value / 2**20
    return cpu, rss


async def _window(
    session: aiohttp.ClientSession, url: str, seconds: float, during=None
) -> tuple[Window, object]:
    cpu0, _ = await _process_samples(session, url)
    t0 = time.monotonic()
    result = None
    if during is None:
        await asyncio.sleep(seconds)
    else:
        result = await during
    elapsed = time.monotonic() - t0
    cpu1, rss = await _process_samples(session, url)
    pct = {rank: 100.0 * (cpu1[rank] - cpu0.get(rank, 0.0)) / elapsed for rank in cpu1}
    return Window(
        round(elapsed, 2), {k: round(v, 1) for k, v in pct.items()}, {k: round(v, 1) for k, v in rss.items()}
    ), result


async def _load(
    session: aiohttp.ClientSession, url: str, rate: float, duration: float, body: dict
) -> LoadResult:
    latencies: list[float] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        t0 = time.perf_counter()
        try:
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                done = False
                async for line in resp.content:
                    done = done or line.strip() == b"data: [DONE]"
                if resp.status != 200 or not done:
                    failures += 1
                    return
            latencies.append(time.perf_counter() - t0)
        except aiohttp.ClientError:
            failures += 1

    tasks = []
    start = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    lat = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

    return LoadResult(n, len(lat), failures, pct(0.5), pct(0.99))


async def _measure(url: str, args: argparse.Namespace) -> tuple[Window, Window, LoadResult]:
    width, height = (int(x) for x in args.image.split("x"))
    body = {
        "model": "bench-vlm",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the image."},
                    {
                        "type": "image_url",
                        "image_url": {"url": synthetic_frame(width, height, 0, quality=85)},
                    },
                ],
            }
        ],  # fmt: skip
        "max_tokens": args.max_tokens,
        "stream": True,
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        print(f"  idle window {args.idle:.0f}s ...", flush=True)
        idle, _ = await _window(session, url, args.idle)
        print(f"  load window {args.duration:.0f}s at {args.rate} req/s ...", flush=True)
        load, result = await _window(
            session, url, args.duration, _load(session, url, args.rate, args.duration, body)
        )
    assert isinstance(result, LoadResult)
    return idle, load, result


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    port = free_port()
    cmd = [sys.executable, "-m", "backend", "--model-path", "bench-vlm", "--tp-size", str(args.tp_size),
           "--port", str(port), "--enable-metrics", "--mm-input-mode", mode, "--step-cost-ms", str(args.step_cost_ms)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/ready", 180, alive=lambda: proc.poll() is None)
        time.sleep(2)  # let start-up work settle out of the idle window
        idle, load, result = asyncio.run(_measure(url, args))
        return ModeResult(mode, idle, load, result)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def to_markdown(results: list[ModeResult], args: argparse.Namespace) -> str:
    ranks = ["tokenizer", *[str(r) for r in range(args.tp_size)]]
    head = (
        "| mode | window | "
        + " | ".join(f"CPU% {r}" for r in ranks)
        + " | CPU% total | RSS MiB (sum) | ok/sent | p50 s | p99 s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for res in results:
        for name, w in (("idle", res.idle), ("load", res.load)):
            cells = [f"{w.cpu_percent.get(r, float('nan')):.1f}" for r in ranks]
            total = sum(w.cpu_percent.values())
            lr = res.load_result
            extra = [f"{lr.ok}/{lr.sent}", str(lr.p50_s), str(lr.p99_s)] if name == "load" else ["", "", ""]
            lines.append(f"| {res.mode} | {name} | " + " | ".join(cells) + f" | {total:.1f} | {sum(w.rss_mib.values()):.0f} | "
                         + " | ".join(extra) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backend", description=__doc__.split("\n\n")[0])
    p.add_argument("--tp-size", type=int, default=2)
    p.add_argument("--modes", default="per_rank,sharded", help="comma-separated mm-input modes")
    p.add_argument("--rate", type=float, default=2.0, help="requests per second in the load window")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    p.add_argument("--image", default="640x480", help="WIDTHxHEIGHT of each request's image")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--step-cost-ms", type=float, default=1.0)
    p.add_argument(
        "--out", default="reports/bench-backend", help="directory for the JSON and Markdown tables"
    )
    args = p.parse_args(argv)
    results = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        print(f"mode {mode}: starting a TP={args.tp_size} server", flush=True)
        results.append(run_mode(mode, args))
    table = to_markdown(results, args)
    print(f"\nCPU % of one core per process (rank label), {os.cpu_count()} CPUs on this machine, image {args.image}, "
          f"{args.max_tokens} output tokens, step cost {args.step_cost_ms} ms\n")  # fmt: skip
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"{stamp}.json").write_text(
        json.dumps({"args": vars(args), "results": [asdict(r) for r in results]}, indent=2)
    )
    (out / f"{stamp}.md").write_text(table + "\n")
    print(f"\nwritten to {out}/{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
