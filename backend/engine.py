"""The front process's side of the topology: spawns the TP scheduler ranks, talks to the entry rank over
ZMQ (like sglang's tokenizer manager), routes per-token events to waiting requests, and watches the ranks
so a crashed rank fails the server loudly instead of leaving it hanging."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import zmq
import zmq.asyncio

from backend.api_requests import GenerationInput
from backend.config import ServerConfig
from backend.faults import FaultSettings
from backend.ipc import (
    AbortReq,
    ErrorEvent,
    GenerateReq,
    RankFailed,
    RanksReady,
    SchedulerStats,
    SetFaults,
    ShutdownReq,
    StepReport,
    TokenEvent,
)
from backend.scheduler import RankConfig, rank_main
from infra.net import free_port

log = logging.getLogger("backend.engine")

RANK_WATCH_INTERVAL_S = 0.5


class EngineFailed(Exception):
    """The scheduler ranks are gone; no request can complete."""


@dataclass(frozen=True)
class StatsSnapshot:
    stats: SchedulerStats
    tokens_generated_total: int


class Engine:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self.ranks_ready: RanksReady | None = None
        self.stats = SchedulerStats(0, 0, 0)
        self.last_receive = 0.0  # monotonic time of the entry rank's last report (health checks use it)
        self.on_report: list = []  # callbacks(StepReport), e.g. metrics
        self._queues: dict[str, asyncio.Queue] = {}
        self._procs: list[mp.process.BaseProcess] = []
        self._tasks: list[asyncio.Task] = []
        self._shutting_down = False
        self._ipc_dir = tempfile.mkdtemp(prefix="vlm-backend-")
        self._ctx = zmq.asyncio.Context(1)
        self._send = self._ctx.socket(zmq.PUSH)
        self._recv = self._ctx.socket(zmq.PULL)

    # ---- lifecycle ----
    async def start(self) -> None:
        to_rank0 = f"ipc://{self._ipc_dir}/to_rank0"
        to_front = f"ipc://{self._ipc_dir}/to_front"
        self._send.bind(to_rank0)
        self._recv.bind(to_front)
        master_port = free_port()
        spawn = mp.get_context("spawn")
        for rank in range(self.cfg.tp_size):
            rcfg = RankConfig(
                rank=rank,
                tp_size=self.cfg.tp_size,
                master_port=master_port,
                mm_input_mode=self.cfg.mm_input_mode,
                step_cost_ms=self.cfg.step_cost_ms,
                max_running_requests=self.cfg.max_running_requests,
                seed=self.cfg.seed,
                faults=self.cfg.faults,
                front_to_rank0=to_rank0,
                rank0_to_front=to_front,
                step_all_reduce=self.cfg.step_all_reduce,
            )
            proc = spawn.Process(target=rank_main, args=(rcfg,), name=f"vlm-backend-rank{rank}", daemon=True)
            proc.start()
            self._procs.append(proc)
        self._tasks.append(asyncio.create_task(self._receive_loop(), name="engine-receive"))
        self._tasks.append(asyncio.create_task(self._watch_ranks(), name="engine-watch"))

    def process_ids(self) -> dict[str, int]:
        """`rank` label -> pid of each server process (the front is `tokenizer`, as in sglang)."""
        pids = {"tokenizer": os.getpid()}
        for rank, proc in enumerate(self._procs):
            if proc.pid is not None and proc.exitcode is None:
                pids[str(rank)] = proc.pid
        return pids

    async def shutdown(self, timeout_s: float = 15.0) -> None:
        """Ask the ranks to stop after their current iteration; kill what does not stop in time."""
        self._shutting_down = True
        if not self.failed.is_set() and any(p.is_alive() for p in self._procs):
            await self._send.send_pyobj(ShutdownReq())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for proc in self._procs:
            while proc.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.05)
        for proc in self._procs:
            if proc.is_alive():
                log.warning("rank process %s did not stop in time; killing it", proc.name)
                proc.kill()
            proc.join(timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._send.close(linger=0)
        self._recv.close(linger=0)
        self._ctx.term()
        shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def kill_ranks(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()

    # ---- requests ----
    async def generate(
        self, inp: GenerationInput, rid: str | None = None
    ) -> AsyncGenerator[TokenEvent | ErrorEvent, None]:
        """Token events of one request until it finishes or fails; aborts it if the caller stops early."""
        if self.failed.is_set():
            raise EngineFailed(self.failure or "scheduler ranks failed")
        rid = rid or uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = queue
        finished = False
        try:
            await self._send.send_pyobj(
                GenerateReq(rid, inp.items, inp.text_tokens, inp.max_new_tokens, inp.digest), copy=False
            )
            while not finished:
                event = await queue.get()
                if isinstance(event, EngineFailed):
                    finished = True  # nothing left to abort
                    raise event
                finished = isinstance(event, ErrorEvent) or event.finished
                yield event
        finally:
            self._queues.pop(rid, None)
            if not finished and not self.failed.is_set() and not self._ctx.closed:
                await self._send.send_pyobj(AbortReq(rid))

    async def set_faults(self, faults: FaultSettings) -> None:
        await self._send.send_pyobj(SetFaults(faults))

    # ---- background tasks ----
    async def _receive_loop(self) -> None:
        while True:
            msg = await self._recv.recv_pyobj()
            if isinstance(msg, StepReport):
                self.last_receive = time.monotonic()
                self.stats = msg.stats
                for event in msg.events:
                    queue = self._queues.get(event.rid)
                    if queue is not None:
                        queue.put_nowait(event)
                for callback in self.on_report:
                    callback(msg)
            elif isinstance(msg, RanksReady):
                self.ranks_ready = msg
                self.ready.set()
                log.info("%d scheduler rank(s) ready (device %s, step all-reduce %s)", msg.tp_size, msg.device,
                         msg.step_all_reduce)  # fmt: skip
            elif isinstance(msg, RankFailed):
                # A rank that lost a peer reports the broken connection; name the peer that died first.
                dead = [f"scheduler rank {r} exited with code {p.exitcode}" for r, p in enumerate(self._procs)
                        if r != msg.rank and p.exitcode is not None]  # fmt: skip
                cause = "; ".join(dead) + "; then " if dead else ""
                self._fail(f"{cause}scheduler rank {msg.rank} failed: {msg.message}")

    async def _watch_ranks(self) -> None:
        while not self.failed.is_set():
            await asyncio.sleep(RANK_WATCH_INTERVAL_S)
            if self._shutting_down:
                continue
            for rank, proc in enumerate(self._procs):
                if proc.exitcode is not None:
                    self._fail(f"scheduler rank {rank} exited with code {proc.exitcode}")
                    break

    def _fail(self, reason: str) -> None:
        if self.failed.is_set() or self._shutting_down:
            return
        log.error("%s; failing every in-flight request", reason)
        self.failure = reason
        self.failed.set()
        for queue in self._queues.values():
            queue.put_nowait(EngineFailed(reason))
