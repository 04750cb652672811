"""Streams through a real Traefik: how many end early or fail, at steady state and across weight changes.

    python -m bench.gateway [--requests 20000] [--changes 100] [--fix none,fastproxy] [--keep-alive 5] [--idle 5]

Two embedded backends (the chart's arms) behind Traefik (built by tools/traefik/build.sh), configured by
its file provider the way its Gateway API provider configures the chart's HTTPRoute: one router, a
weighted service over the two arms, each arm's `x-canary-arm` header set on its own service. Locust
sends streamed chat requests with images.

- `steady`: `--requests` requests in bursts separated by `--idle` gaps (default 5 s, sglang's keep-alive),
  so connections to the backends are reused, left idle and, when the gap reaches the servers'
  `--keep-alive`, closed by the server in turns.
- `changes`: `--changes` weight changes under continuous load, every round starting with a fresh Locust
  whose first weight change lands within a second of its first request.

`--fix` lists the data planes to run, one after the other: `none` (Traefik's defaults), `fastproxy`
(Traefik's `--experimental.fastProxy`: the whole request is written before the response is read; what the
chart's docs tell Traefik users to set) and `buffer` (Traefik's buffering middleware: it reads the request
whole, and also buffers whole responses, which no provider can turn off). With `none`, Traefik cuts streams
after their first token
(docs/helm.md has the cause). The table counts failures by kind, the streams Traefik cut ("use of closed
network connection" in its debug log) and the median TTFT against the median end-to-end time (a proxy that
buffered responses would show them close); results go to reports/bench-gateway/<time>/. Exit status 1 when
a data plane other than `none` failed a request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.config import KEEP_ALIVE_ENV
from infra.net import free_port, wait_http_ok
from rollout.local_stack import ArmSpec, LoadSpec, start_loadtest
from rollout.processes import ProcessRef, is_alive, spawn_detached, terminate

ROOT = Path(__file__).resolve().parents[1]
TRAEFIK = ROOT / ".cache" / "traefik" / "bin" / "traefik"
ADDRESSES = {"baseline": "127.0.0.2", "canary": "127.0.0.3"}
# The local profiles' demo load (small images, few tokens): CPU-only backends on a small machine.
LOAD_ARGS = ("--max-tokens", "8", "--image-sizes", "448x448")
CUT_LINE = "use of closed network connection"
WEIGHT_CYCLE = ((90, 10), (50, 50), (0, 100), (50, 50), (100, 0))


@dataclass(frozen=True)
class Fix:
    """The data plane's settings under test."""

    static_args: tuple[str, ...] = ()  # Traefik's static configuration
    # Traefik's buffering middleware on the router: the request is read whole before it is forwarded, and
    # the response too (Traefik 3.7 sets its disableResponseBuffer from no provider), so it is no fix for
    # streams; the bench keeps it to show that in the TTFT column.
    buffer_requests: bool = False


FIXES = {
    "none": Fix(),
    "fastproxy": Fix(static_args=("--experimental.fastProxy=true",)),
    "buffer": Fix(buffer_requests=True),
}
# Request bodies up to 4 MiB in memory (images arrive base64-encoded), refused above sglang's 64 MiB.
REQUEST_BUFFERING = {
    "memRequestBodyBytes": 4 << 20,
    "maxRequestBodyBytes": 64 << 20,
    "disableResponseBuffer": True,
}


def dynamic_config(weights: tuple[int, int], backends: dict[str, str], fix: Fix) -> dict[str, Any]:
    arms = dict(zip(("baseline", "canary"), weights, strict=True))
    middlewares: dict[str, Any] = {
        f"arm-{arm}": {"headers": {"customResponseHeaders": {"x-canary-arm": arm}}} for arm in backends
    }
    router: dict[str, Any] = {"rule": "PathPrefix(`/`)", "entryPoints": ["web"], "service": "split"}
    if fix.buffer_requests:
        middlewares["request-buffer"] = {"buffering": REQUEST_BUFFERING}
        router["middlewares"] = ["request-buffer"]
    services: dict[str, Any] = {
        "split": {"weighted": {"services": [{"name": arm, "weight": arms[arm]} for arm in backends]}}
    }
    for arm, url in backends.items():
        services[arm] = {"loadBalancer": {"servers": [{"url": url}]}, "middlewares": [f"arm-{arm}"]}
    return {"http": {"routers": {"vlm": router}, "middlewares": middlewares, "services": services}}


class DataPlane:
    """Traefik (file provider) in front of one embedded backend per arm."""

    def __init__(self, workdir: Path, fix: Fix, keep_alive_s: float) -> None:
        self.workdir = workdir
        self.fix = fix
        self.keep_alive_s = keep_alive_s
        self.processes: dict[str, ProcessRef] = {}
        self.backends: dict[str, str] = {}
        self.config = workdir / "dynamic.yaml"
        self.weights = (100, 0)

    def start(self) -> DataPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for arm, address in ADDRESSES.items():
            port = free_port(address)
            spec = ArmSpec(arm=arm, mm_input_mode="sharded", tp_size=1, extra_args=(f"--host={address}",))
            self.processes[arm] = spawn_detached(
                spec.command_line(port),
                log_path=self.workdir / f"{arm}.log",
                env={KEEP_ALIVE_ENV: f"{self.keep_alive_s:g}"},
            )
            self.backends[arm] = f"http://{address}:{port}"
        self.set_weights(self.weights)
        web, ping = free_port(), free_port()
        args = [
            str(TRAEFIK),
            f"--entrypoints.web.address=127.0.0.1:{web}",
            f"--entrypoints.ping.address=127.0.0.1:{ping}",
            "--ping=true",
            "--ping.entrypoint=ping",
            f"--providers.file.filename={self.config}",
            "--providers.file.watch=true",
            "--providers.providersthrottleduration=0s",
            "--log.level=DEBUG",  # the proxy's "closed network connection" errors are logged at debug
            "--global.checknewversion=false",
            "--global.sendanonymoususage=false",
            *self.fix.static_args,
        ]
        self.processes["traefik"] = spawn_detached(args, log_path=self.workdir / "traefik.log")
        self.url = f"http://127.0.0.1:{web}"
        wait_http_ok(f"http://127.0.0.1:{ping}/ping", 60, alive=lambda: is_alive(self.processes["traefik"]))
        for arm, url in self.backends.items():
            wait_http_ok(
                url + "/ready", 180, interval_s=0.5, alive=lambda ref=self.processes[arm]: is_alive(ref)
            )
        wait_http_ok(self.url + "/v1/models", 30)
        return self

    def set_weights(self, weights: tuple[int, int]) -> None:
        """Rewrite the file atomically; Traefik sees the change through its file watcher."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(dynamic_config(weights, self.backends, self.fix)))
        tmp.replace(self.config)
        self.weights = weights

    def cut_streams(self) -> int:
        return (self.workdir / "traefik.log").read_text(errors="replace").count(CUT_LINE)

    def stop(self) -> None:
        for ref in self.processes.values():
            terminate(ref)


def run_load(plane: DataPlane, name: str, stages: str, seed: int) -> tuple[dict[str, Any], Path]:
    load = start_loadtest(
        plane.url,
        LoadSpec(rate=1.0, seed=seed, extra_args=(*LOAD_ARGS, "--stages", stages)),
        plane.workdir / name,
    )
    return load, Path(load["requests_jsonl"])


def records_of(jsonl: Path) -> list[dict[str, Any]]:
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def wait_load(
    load: dict[str, Any],
    timeout_s: float,
    *,
    every_s: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> None:
    """Until Locust is done with its stages (stopped, and an error, past `timeout_s`)."""
    ref = ProcessRef.from_dict(load["process"])
    deadline = time.monotonic() + timeout_s
    while is_alive(ref):
        if progress is not None:
            progress()
        if time.monotonic() > deadline:
            terminate(ref, timeout_s=30.0)
            raise RuntimeError(f"Locust still running after {timeout_s:.0f}s: {load['log']}")
        time.sleep(every_s)


def steady(plane: DataPlane, requests: int, rate: float, seed: int, idle_s: float) -> dict[str, Any]:
    """Bursts of `rate` req/s for 20 s, each followed by `idle_s` without requests."""
    burst_s = 20.0
    rounds = max(1, round(requests / (rate * burst_s)))
    stages = ",".join(f"burst{i}:{burst_s:g}s@{rate:g},idle{i}:{idle_s:g}s@0" for i in range(rounds))
    before = plane.cut_streams()
    load, jsonl = run_load(plane, "steady", stages, seed)
    total_s = rounds * (burst_s + idle_s)
    began = time.monotonic()

    def progress() -> None:
        done = len(records_of(jsonl))
        print(f"  steady: {done} requests back, {time.monotonic() - began:.0f}/{total_s:.0f} s", flush=True)

    wait_load(load, total_s + 120, every_s=15.0, progress=progress)
    return outcome("steady", records_of(jsonl), plane.cut_streams() - before, changes=0)


def changes(plane: DataPlane, count: int, rate: float, seed: int, per_round: int = 10) -> dict[str, Any]:
    """Rounds of a fresh Locust: its first change lands within a second of its first request, then a
    change every 1.5 s under continuous load."""
    records: list[dict[str, Any]] = []
    done, first_gaps = 0, []
    before = plane.cut_streams()
    step = 0
    while done < count:
        load, jsonl = run_load(
            plane, f"changes-{done:04d}", f"load:{per_round * 1.5 + 6:g}s@{rate:g}", seed + done
        )
        deadline = time.monotonic() + 60.0
        while not jsonl.exists() or not jsonl.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no request came back through the gateway in 60 s: {load['log']}")
            time.sleep(0.01)
        first_sent = json.loads(jsonl.read_text().splitlines()[0])["sent_at"]
        for i in range(min(per_round, count - done)):
            step += 1
            plane.set_weights(WEIGHT_CYCLE[step % len(WEIGHT_CYCLE)])
            if i == 0:
                first_gaps.append(time.time() - first_sent)
            done += 1
            time.sleep(1.5)
        wait_load(load, 60.0)
        records += records_of(jsonl)
        print(f"  changes: {done}/{count} weight changes, {len(records)} requests back", flush=True)
    plane.set_weights((100, 0))
    result = outcome("changes", records, plane.cut_streams() - before, changes=done)
    result["first_change_after_first_request_s"] = [round(gap, 3) for gap in first_gaps]
    return result


def outcome(scenario: str, records: list[dict[str, Any]], cut: int, *, changes: int) -> dict[str, Any]:
    failed = [r for r in records if not r["ok"] and r["error_kind"] != "cancelled"]
    ok = [r for r in records if r["ok"]]
    return {
        # a proxy that buffered whole responses would show TTFT close to the end-to-end time
        "median_ttft_ms": round(statistics.median(r["ttft_ms"] for r in ok), 1) if ok else None,
        "median_e2e_ms": round(statistics.median(r["e2e_ms"] for r in ok), 1) if ok else None,
        "scenario": scenario,
        "requests": len(records),
        "failed": len(failed),
        "failed_by_kind": dict(Counter(r["error_kind"] for r in failed)),
        "examples": [r["error"] for r in failed[:5]],
        "cut_by_traefik": cut,
        "weight_changes": changes,
        "arms": dict(Counter(r.get("arm") for r in records)),
    }


def table(results: list[dict[str, Any]], keep_alive_s: float, idle_s: float) -> str:
    lines = [
        f"Streamed chat requests with images through Traefik; server keep-alive {keep_alive_s:g} s, idle gaps {idle_s:g} s",
        "",
        "| data plane | scenario | requests | weight changes | failed | by kind | cut by Traefik | median TTFT / e2e (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["failed_by_kind"].items())) or "-"
        lines.append(
            f"| {r['fix']} | {r['scenario']} | {r['requests']} | {r['weight_changes']} | {r['failed']} | {kinds} | "
            f"{r['cut_by_traefik']} | {r['median_ttft_ms']} / {r['median_e2e_ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000, help="steady-state requests (0: skip)")
    p.add_argument("--changes", type=int, default=100, help="weight changes under load (0: skip)")
    p.add_argument("--rate", type=float, default=40.0, help="requests per second within a burst")
    p.add_argument(
        "--fix",
        type=lambda text: text.split(","),
        default=["none", "fastproxy"],
        help=f"data-plane settings to run, one after the other, comma-separated from {sorted(FIXES)}",
    )
    p.add_argument(
        "--keep-alive", type=float, default=5.0, help="the servers' keep-alive (sglang's default: 5 s)"
    )
    p.add_argument(
        "--idle",
        type=float,
        default=5.0,
        help="seconds without requests between bursts (default: sglang's keep-alive)",
    )
    p.add_argument("--seed", type=int, default=11)
    p.add_argument(
        "--out", type=Path, default=ROOT / "reports" / "bench-gateway" / time.strftime("%Y%m%d-%H%M%S")
    )
    args = p.parse_args(argv)
    unknown = [f for f in args.fix if f not in FIXES]
    if unknown:
        p.error(f"--fix: unknown {unknown}; choose from {sorted(FIXES)}")
    if not TRAEFIK.exists():
        print(f"{TRAEFIK} is missing: run `bash tools/traefik/build.sh` first", file=sys.stderr)
        return 3
    results = []
    for fix in args.fix:
        print(f"data plane with fix `{fix}`:", flush=True)
        plane = DataPlane(args.out / fix, FIXES[fix], args.keep_alive).start()
        try:
            if args.changes:
                results.append({"fix": fix, **changes(plane, args.changes, args.rate, args.seed)})
            if args.requests:
                results.append({"fix": fix, **steady(plane, args.requests, args.rate, args.seed, args.idle)})
        finally:
            plane.stop()
    text = table(results, args.keep_alive, args.idle)
    (args.out / "result.json").write_text(json.dumps(results, indent=2))
    (args.out / "result.md").write_text(text + "\n")
    print(text)
    print(f"written to {args.out}")
    return 0 if all(r["failed"] == 0 for r in results if r["fix"] != "none") else 1


if __name__ == "__main__":
    sys.exit(main())
