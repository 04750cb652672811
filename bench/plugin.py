"""Benchmark of the plugin's batch step on processor outputs: upstream's per-request path vs the strategies.

    python -m bench.plugin [--tp 2] [--workloads img480p,img1080p] [--batches 1,10] [--reps 3]

Real spawned ranks in a real gloo group. Every rank holds the same batch of processor outputs (float32
feature rows of 1176, the sizes Qwen2-VL gives those images, as sglang's tokenizer sends them) and
obtains, per request, the converted inputs through `ProcessorOutputConversion` in each mode. sglang
itself cannot run here, so the conversion is a stand-in with upstream's cost: `from_processor_output`
hashes every item's feature (sha256 over its bytes, `set_pad_value` when the tokenizer did not) and
returns an object holding the features; the stand-in does exactly that, into new objects so repeated
passes cost the same. `per_request` is upstream's `--enable-broadcast-mm-inputs-process` path (one
pickled broadcast per request), `per_rank` is sglang's default (every rank converts every request).
Prints a Markdown table; writes it with the raw JSON under --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist

from mminputs import MMMode, make_strategy
from sglang_plugin.materializer import ProcessorOutputConversion, ProcessorOutputRequest
from testkit.gloo_group import run_group

PATCH_DIM = 1176
WORKLOADS = {  # name: (label, grid h, grid w): Qwen2-VL patch grids after smart resize (644x476, 1932x1092)
    "img480p": ("640x480 image", 34, 46),
    "img1080p": ("1920x1080 image", 78, 138),
}
ALL_MODES = [m.value for m in MMMode]


@dataclass
class Item:
    feature: torch.Tensor
    grid: torch.Tensor
    hash: int | None = None


@dataclass
class ProcessorOutput:
    mm_items: list
    mrope_positions: torch.Tensor


@dataclass
class Inputs:
    mm_items: list
    mrope_positions: torch.Tensor


def convert(raw: ProcessorOutput, *, requires_mm_token_modalities: bool = False) -> Inputs:
    """Stand-in for upstream's conversion, at its cost: hash each feature, return the inputs."""
    items = []
    for item in raw.mm_items:
        digest = hashlib.sha256(item.feature.contiguous().view(torch.uint8).numpy()).digest()
        items.append(Item(item.feature, item.grid, int.from_bytes(digest[:8], "big")))
    return Inputs(items, raw.mrope_positions)


def build_batch(workload: str, size: int) -> list[ProcessorOutputRequest]:
    _, h, w = WORKLOADS[workload]
    requests = []
    for i in range(size):
        gen = torch.Generator().manual_seed(i)
        feature = torch.rand(h * w, PATCH_DIM, generator=gen)
        grid = torch.tensor([[1, h, w]])
        positions = torch.arange(h * w // 4 + 16).expand(3, -1).clone()
        requests.append(
            ProcessorOutputRequest(
                f"{workload}-{size}-{i}", ProcessorOutput([Item(feature, grid)], positions)
            )
        )
    return requests


def _rank(
    rank: int, world: int, cells: list[tuple[str, int]], modes: list[str], reps: int, warmup: int
) -> list:
    torch.set_num_threads(1)  # a scheduler converts on one thread
    group = dist.group.WORLD
    conversion = ProcessorOutputConversion(convert, False)
    strategies = {m: make_strategy(m, group=group, materializer=conversion) for m in modes}
    records = []
    for workload, size in cells:
        batch = build_batch(workload, size)
        for _ in range(warmup):
            for strategy in strategies.values():
                dist.barrier(group=group)
                strategy.obtain(batch)
        for mode, strategy in strategies.items():
            samples = []
            for _ in range(reps):
                dist.barrier(group=group)
                ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                outcomes = strategy.obtain(batch)
                t1, ru1 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
                hashes = [o.mm_items[0].hash for o in outcomes]  # an error outcome fails here, loudly
                del outcomes
                cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                samples.append((t0, t1, cpu))
            records.append(
                {"workload": workload, "batch": size, "mode": mode, "samples": samples, "hashes": hashes}
            )
            records[-1]["transport"] = strategy.transport_name
    for strategy in strategies.values():
        strategy.close()
    return records


def summarize(per_rank: dict[int, list], tp: int) -> list[dict]:
    rows = []
    for k, first in enumerate(per_rank[0]):
        walls, cpus = [], []
        for rep in range(len(first["samples"])):
            samples = [per_rank[r][k]["samples"][rep] for r in per_rank]
            walls.append(max(s[1] for s in samples) - min(s[0] for s in samples))
            cpus.append(sum(s[2] for s in samples))
        # Every rank, and every mode of the cell, got the same hashes (the same converted inputs).
        cell = [x for x in per_rank[0] if (x["workload"], x["batch"]) == (first["workload"], first["batch"])]
        same = all(per_rank[r][k]["hashes"] == first["hashes"] for r in per_rank) and all(
            x["hashes"] == first["hashes"] for x in cell
        )
        rows.append(
            {
                "tp": tp,
                "workload": first["workload"],
                "batch": first["batch"],
                "mode": first["mode"],
                "transport": first["transport"],
                "wall_s": statistics.median(walls),
                "cpu_s": statistics.median(cpus),
                "ranks_agree": same,
            }
        )
    return rows


def markdown(rows: list[dict], host: str) -> str:
    lines = [
        "| input | batch | mode | transport | wall s | wall / per_request | CPU s (all ranks) | CPU / per_request |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = next(
            r
            for r in rows
            if (r["workload"], r["batch"], r["mode"]) == (row["workload"], row["batch"], "per_request")
        )
        lines.append(
            f"| {WORKLOADS[row['workload']][0]} | {row['batch']} | {row['mode']} | {row['transport']} "
            f"| {row['wall_s']:.3f} | {row['wall_s'] / base['wall_s']:.2f}x "
            f"| {row['cpu_s']:.2f} | {row['cpu_s'] / base['cpu_s']:.2f}x |"
        )
    lines += [
        "",
        f"Machine: {host}. TP={rows[0]['tp']}; medians of the timed passes; wall: first start to last end.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plugin", description=__doc__.split("\n")[0])
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--workloads", default="img480p,img1080p")
    parser.add_argument("--batches", default="1,10")
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default="reports/bench-plugin")
    args = parser.parse_args(argv)
    try:
        workloads = [w for w in args.workloads.split(",") if w]
        unknown = [w for w in workloads if w not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workload(s) {unknown}; valid: {sorted(WORKLOADS)}")
        modes = [MMMode(m).value for m in args.modes.split(",") if m]
        if "per_request" not in modes:
            raise ValueError("--modes must include per_request (the baseline of the ratios)")
        sizes = [int(b) for b in args.batches.split(",") if b]
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    cells = [(w, s) for w in workloads for s in sizes]
    print(
        f"bench: TP={args.tp}, cells {cells}, modes {modes}, {args.reps} reps ...",
        file=sys.stderr,
        flush=True,
    )
    per_rank = run_group(_rank, args.tp, cells, modes, args.reps, args.warmup, timeout_s=args.timeout)
    rows = summarize(per_rank, args.tp)
    host = f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"
    table = markdown(rows, host)
    print(table)
    out = Path(args.out) / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"bench: wrote {out}", file=sys.stderr)
    return 0 if all(r["ranks_agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
