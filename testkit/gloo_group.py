"""Real local gloo groups for tests and benchmarks: run a function on every rank of a fresh group of processes.

Functions run on the ranks must be importable by name (spawned ranks import them), so they live in modules,
not in test files.
"""

from __future__ import annotations

import os
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from infra.net import free_port

GLOO_TIMEOUT_S = 60


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple, results) -> None:
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=GLOO_TIMEOUT_S),
        )
        value = fn(rank, world, *args)
        results.put((rank, True, value))
    except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a peer may be gone
                pass


@dataclass
class LocalGroup:
    """A group of spawned ranks; always `stop()` it (the context manager does)."""

    procs: list
    results: Any
    collected: dict[int, tuple[bool, Any]] = field(default_factory=dict)

    def wait(self, timeout_s: float, ranks: list[int] | None = None) -> dict[int, Any]:
        """Each rank's return value; raises with the rank's traceback if one failed, or on timeout."""
        wanted = set(range(len(self.procs)) if ranks is None else ranks)
        deadline = time.monotonic() + timeout_s
        while not wanted <= set(self.collected):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(wanted - set(self.collected))
                raise TimeoutError(f"ranks {missing} gave no result within {timeout_s:.0f}s (hung group?)")
            try:
                rank, ok, value = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.collected[rank] = (ok, value)
        failed = {r: v for r, (ok, v) in self.collected.items() if not ok and r in wanted}
        if failed:
            raise AssertionError(
                "rank(s) failed:\n" + "\n".join(f"rank {r}:\n{tb}" for r, tb in failed.items())
            )
        return {r: self.collected[r][1] for r in sorted(wanted)}

    def kill(self, rank: int) -> None:
        os.kill(self.procs[rank].pid, 9)
        self.procs[rank].join(10)

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(5)
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def __enter__(self) -> LocalGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_group(fn: Callable, world_size: int, *args: Any) -> LocalGroup:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, fn, args, results)) for r in range(world_size)
    ]
    for proc in procs:
        proc.start()
    return LocalGroup(procs, results)


def run_group(fn: Callable, world_size: int, *args: Any, timeout_s: float = 120) -> dict[int, Any]:
    with start_group(fn, world_size, *args) as group:
        return group.wait(timeout_s)
