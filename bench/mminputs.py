"""Benchmark of the multimodal stage per mode: wall time and CPU summed over the TP ranks.

    python -m bench.mminputs [--tp 2] [--workloads img480p,img1080p,video720p] [--batches 1,10] [--reps 1]

Real processes joined by a real gloo group, real materialization of JPEG data URLs. Prints a Markdown
table per TP size (ratios to per_rank side by side) and writes it with the raw JSON under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from infra.net import free_port
from mminputs.modes import MMMode
from mminputs.strategies import make_strategy
from mminputs.types import MMItem, MMRequest
from testkit.images import synthetic_frame


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    width: int
    height: int
    frames: int  # 0 for an image


WORKLOADS = {
    w.name: w
    for w in (
        Workload("img480p", "640x480 image", 640, 480, 0),
        Workload("img1080p", "1920x1080 image", 1920, 1080, 0),
        Workload("video720p", "16-frame 1280x720 video", 1280, 720, 16),
    )
}
ALL_MODES = [m.value for m in MMMode]


def build_batches(workload: Workload, sizes: list[int], seed: int = 0) -> dict[int, list[MMRequest]]:
    """Distinct requests per batch size. Frames come from a pool of distinct encoded frames (encoding them
    all would dominate the run); materialization cost does not depend on which pool frame a request uses."""
    most = max(sizes)
    pool_size = min(most * max(workload.frames, 1), 32)
    pool = [synthetic_frame(workload.width, workload.height, seed * 1000 + k) for k in range(pool_size)]
    batches: dict[int, list[MMRequest]] = {}
    for size in sizes:
        requests = []
        for i in range(size):
            rid = f"{workload.name}-{size}-{i}"
            if workload.frames:
                frames = [pool[(i * 7 + f) % pool_size] for f in range(workload.frames)]
                requests.append(MMRequest(rid, (MMItem.video(frames),)))
            else:
                requests.append(MMRequest(rid, (MMItem.image(pool[i % pool_size]),)))
        batches[size] = requests
    return batches


def _rank_main(rank: int, world: int, port: int, plan_path: str, result_path: str) -> None:
    torch.set_num_threads(1)  # a scheduler's materialization is single-threaded; keep ranks comparable
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(minutes=10),
    )
    with open(plan_path, "rb") as fh:
        plan = pickle.load(fh)
    group = dist.group.WORLD
    strategies = {mode: make_strategy(mode, group=group) for mode in plan["modes"]}
    for strategy in strategies.values():  # first-use costs (imports, probes) stay out of the numbers
        strategy.obtain(plan["first_use"])
    records = []
    for workload_name, batches in plan["cells"]:
        for size, batch in batches.items():
            samples: dict[str, list[tuple[float, float, float]]] = {m: [] for m in plan["modes"]}
            for _ in range(plan["warmup"]):  # untimed passes, every mode alike: steady state, not first use
                for strategy in strategies.values():
                    dist.barrier(group=group)
                    strategy.obtain(batch)
            for _ in range(plan["reps"]):
                for mode, strategy in strategies.items():
                    dist.barrier(group=group)
                    ru0 = resource.getrusage(resource.RUSAGE_SELF)
                    t0 = time.monotonic()
                    outcomes = strategy.obtain(batch)
                    t1 = time.monotonic()
                    ru1 = resource.getrusage(resource.RUSAGE_SELF)
                    errors = [o for o in outcomes if not hasattr(o, "pixel_values")]
                    if errors:
                        raise RuntimeError(f"benchmark request failed: {errors[0]}")
                    del outcomes
                    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                    samples[mode].append((t0, t1, cpu))
            gathered: list = [None] * world
            dist.all_gather_object(gathered, samples, group=group)
            if rank == 0:
                for mode in plan["modes"]:
                    walls, cpus = [], []
                    for rep in range(plan["reps"]):
                        per_rank = [g[mode][rep] for g in gathered]
                        walls.append(max(s[1] for s in per_rank) - min(s[0] for s in per_rank))
                        cpus.append(sum(s[2] for s in per_rank))
                    records.append(
                        {
                            "tp": world,
                            "workload": workload_name,
                            "batch": size,
                            "mode": mode,
                            "transport": strategies[mode].transport_name,
                            "wall_s": walls,
                            "cpu_s": cpus,
                            "wall_median_s": statistics.median(walls),
                            "cpu_median_s": statistics.median(cpus),
                        }
                    )
                cell = [r for r in records if r["workload"] == workload_name and r["batch"] == size]
                print(_progress_line(world, workload_name, size, cell), flush=True)
    if rank == 0:
        with open(result_path, "w") as fh:
            json.dump(records, fh)
    dist.barrier(group=group)
    dist.destroy_process_group()


def _progress_line(tp: int, workload: str, size: int, cell: list[dict]) -> str:
    parts = [f"{r['mode']} {r['wall_median_s']:.3f}s/{r['cpu_median_s']:.2f}cpu" for r in cell]
    return f"[tp={tp} {workload} x{size}] " + "  ".join(parts)


def run_tp(
    tp: int,
    workloads: list[Workload],
    sizes: list[int],
    modes: list[str],
    reps: int,
    warmup: int,
    timeout_s: float,
):
    cells = []
    for workload in workloads:
        started = time.monotonic()
        cells.append((workload.name, build_batches(workload, sizes)))
        print(f"built {workload.name} inputs in {time.monotonic() - started:.1f}s", flush=True)
    first_use = [MMRequest("first-use", (MMItem.image(synthetic_frame(64, 48, 1)),))]
    with tempfile.TemporaryDirectory(prefix="bench-mm-") as tmp:
        plan_path, result_path = os.path.join(tmp, "plan.pkl"), os.path.join(tmp, "result.json")
        with open(plan_path, "wb") as fh:
            pickle.dump(
                {"cells": cells, "modes": modes, "reps": reps, "warmup": warmup, "first_use": first_use}, fh
            )
        ctx = mp.get_context("spawn")
        port = free_port()
        procs = [
            ctx.Process(target=_rank_main, args=(r, tp, port, plan_path, result_path)) for r in range(tp)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout_s
        try:
            for proc in procs:
                proc.join(max(1.0, deadline - time.monotonic()))
            failed = [p.exitcode for p in procs if p.exitcode != 0]
            if failed:
                raise RuntimeError(
                    f"benchmark ranks failed or timed out (exit codes {[p.exitcode for p in procs]})"
                )
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        with open(result_path) as fh:
            return json.load(fh)


def markdown(records: list[dict], host: str) -> str:
    lines = [
        f"Machine: {host}",
        "",
        "Medians of the timed passes; wall: first start to last end over the ranks.",
        "",
    ]
    for tp in sorted({r["tp"] for r in records}):
        lines += [f"### TP={tp}", ""]
        rows = [r for r in records if r["tp"] == tp]
        lines += _summary(rows) + [
            "| input | batch | mode | transport | wall s | wall / per_rank | CPU s (all ranks) | CPU / per_rank |",
            "|---|---:|---|---|---:|---:|---:|---:|",
        ]
        for key in _cells(rows):
            cell = [r for r in rows if (r["workload"], r["batch"]) == key]
            base = next((r for r in cell if r["mode"] == "per_rank"), None)
            for r in cell:
                wall_ratio = r["wall_median_s"] / base["wall_median_s"] if base else float("nan")
                cpu_ratio = r["cpu_median_s"] / base["cpu_median_s"] if base else float("nan")
                lines.append(
                    f"| {WORKLOADS[r['workload']].label} | {r['batch']} | {r['mode']} | {r['transport']} | "
                    f"{r['wall_median_s']:.3f} | {wall_ratio:.2f}x | {r['cpu_median_s']:.2f} | {cpu_ratio:.2f}x |"
                )
        lines.append("")
    return "\n".join(lines)


def _summary(rows: list[dict]) -> list[str]:
    """Ratios to per_rank, one line per cell: the figures the targets are stated in."""
    modes = [m for m in ALL_MODES if m != "per_rank" and any(r["mode"] == m for r in rows)]
    head = " | ".join(f"{m} wall / CPU" for m in modes)
    lines = [f"| input | batch | {head} |", "|---|---:|" + "---:|" * len(modes)]
    for key in _cells(rows):
        cell = {r["mode"]: r for r in rows if (r["workload"], r["batch"]) == key}
        base = cell.get("per_rank")
        if base is None:
            continue
        parts = [
            f"{cell[m]['wall_median_s'] / base['wall_median_s']:.2f}x / {cell[m]['cpu_median_s'] / base['cpu_median_s']:.2f}x"
            if m in cell
            else "-"
            for m in modes
        ]
        lines.append(f"| {WORKLOADS[key[0]].label} | {key[1]} | " + " | ".join(parts) + " |")
    return lines + [""]


def _cells(rows: list[dict]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in rows:
        if (r["workload"], r["batch"]) not in seen:
            seen.append((r["workload"], r["batch"]))
    return seen


def host_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}, {os.cpu_count()} logical CPUs ({model}), torch {torch.__version__}, python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mminputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tp", default="2", help="comma-separated TP sizes, e.g. 4,8 (default 2)")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated of {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--batches",
        default="1,10",
        help="comma-separated batch sizes (default 1,10; the full set is 1,10,50)",
    )
    parser.add_argument(
        "--modes", default=",".join(ALL_MODES), help="comma-separated modes (per_rank is the ratio base)"
    )
    parser.add_argument(
        "--reps", type=int, default=1, help="timed repetitions per cell and mode (median reported)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed passes per cell and mode before the timed ones"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a TP run is abandoned")
    parser.add_argument("--out", default="reports/bench-mm", help="directory for table.md and results.json")
    args = parser.parse_args(argv)
    try:
        tps = [int(v) for v in args.tp.split(",")]
        sizes = [int(v) for v in args.batches.split(",")]
        workloads = [WORKLOADS[name] for name in args.workloads.split(",")]
        modes = [MMMode(m).value for m in args.modes.split(",")]
    except (ValueError, KeyError) as exc:
        print(f"bad option: {exc}", file=sys.stderr)
        return 3
    if min(tps) < 1 or min(sizes) < 1 or args.reps < 1 or args.warmup < 0:
        print("--tp, --batches and --reps must be positive, --warmup not negative", file=sys.stderr)
        return 3
    host = host_description()
    print(
        f"bench-mm on {host}: tp={tps} workloads={[w.name for w in workloads]} batches={sizes} reps={args.reps} "
        f"warmup={args.warmup}"
    )
    records: list[dict] = []
    for tp in tps:
        records += run_tp(tp, workloads, sizes, modes, args.reps, args.warmup, args.timeout)
    table = markdown(records, host)
    print(table)
    out = Path(args.out) / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"host": host, "records": records}, indent=1))
    print(f"wrote {out}/table.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
