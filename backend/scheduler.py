"""A TP scheduler rank: one process per rank, all joined by a gloo group, generating in lockstep.

Each loop iteration mirrors sglang's scheduler: the entry rank (rank 0) receives requests from the front
and broadcasts them to the other ranks; every rank runs the multimodal stage for the new requests
through the configured mminputs mode, admits requests into the running batch (continuous batching up to
max running requests), then runs one forward step (prefill for newly admitted requests, else decode)
that costs real compute and ends with a collective, so a rank that is busy elsewhere stalls them all.
Idle ranks block (rank 0 in a ZMQ poll, the others inside the broadcast); none spins.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
import zmq

from backend.compute import StepCompute
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
    broadcast_pyobj,
)
from backend.textgen import TokenSampler, tensor_digest
from mminputs import MMInputError, MMRequest, MMStrategy, make_strategy

log = logging.getLogger("backend.scheduler")

IDLE_HEARTBEAT_S = 5.0  # how long rank 0 blocks for input while idle before a keep-alive broadcast
PHASE_REPORT_INTERVAL_S = 1.0  # the entry rank's phase profile rides on a report at most this often
STEP_ALL_REDUCE = ("auto", "gloo", "nccl")
PREFILL_TOKENS_PER_STEP_COST = 1024  # a prefill of this many prompt tokens costs one more decode step


@dataclass(frozen=True)
class RankConfig:
    rank: int
    tp_size: int
    master_port: int
    mm_input_mode: str
    step_cost_ms: float
    max_running_requests: int
    seed: int
    faults: FaultSettings
    front_to_rank0: str  # ZMQ endpoints (ipc://...)
    rank0_to_front: str
    # The per-step all-reduce: "nccl" over one GPU per rank (sglang's device group), "gloo" over the CPU
    # group, "auto" = nccl when every rank has a GPU of its own. Multimodal inputs and the request fan-out
    # always use the gloo (CPU) group, as sglang's tp cpu_group.
    step_all_reduce: str = "auto"


class PhaseClock:
    """Cumulative wall and CPU (this thread) seconds per phase of the scheduler loop: the rank's profile."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}
        self._name: str | None = None
        self._wall = 0.0
        self._cpu = 0.0

    def enter(self, name: str | None) -> None:
        """End the current phase (if any) and start `name` (None: stop timing)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        if self._name is not None:
            total = self.totals.setdefault(self._name, [0.0, 0.0])
            total[0] += wall - self._wall
            total[1] += cpu - self._cpu
        self._name, self._wall, self._cpu = name, wall, cpu

    def snapshot(self) -> tuple[tuple[str, float, float], ...]:
        return tuple((name, round(w, 6), round(c, 6)) for name, (w, c) in sorted(self.totals.items()))


@dataclass
class _Req:
    rid: str
    prompt_tokens: int
    max_new_tokens: int
    sampler: TokenSampler
    generated: int = 0


@dataclass
class _LeakedMemory:
    """Memory the leak fault retains on purpose.

    Fresh anonymous mappings with every page written: RSS grows by exactly what is retained, even when
    the heap holds freed memory that a malloc'd block would silently reuse.
    """

    blocks: list[mmap.mmap] = field(default_factory=list)

    def retain(self, kib: float) -> None:
        n = int(kib * 1024)
        if n <= 0:
            return
        block = mmap.mmap(-1, n)
        for offset in range(0, n, mmap.PAGESIZE):
            block[offset] = 0xA5
        self.blocks.append(block)


class Scheduler:
    def __init__(
        self,
        cfg: RankConfig,
        compute: StepCompute,
        mm: MMStrategy,
        step_group: dist.ProcessGroup | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank = cfg.rank
        self.compute = compute
        self.mm = mm
        self.faults = cfg.faults
        self.waiting: deque[_Req] = deque()
        self.running: list[_Req] = []
        self._admitted: list[_Req] = []  # admitted this iteration: the next forward step is their prefill
        self.leak = _LeakedMemory()
        self.parent_pid = os.getppid()
        # The step's all-reduce: on the GPU over `step_group` (NCCL), else a CPU tensor over the gloo group.
        self.step_group = step_group
        self.sync = torch.zeros(2, dtype=torch.float64, device=compute.device if step_group else "cpu")
        self.phases = PhaseClock()
        self._phases_sent_at = 0.0
        self._mm_stage_seconds: list[float] = []
        self._events: list[TokenEvent | ErrorEvent] = []
        self._last_stats: SchedulerStats | None = None
        self._zmq = zmq.Context(1) if self.rank == 0 else None
        if self._zmq is not None:
            self.pull = self._zmq.socket(zmq.PULL)
            self.pull.connect(cfg.front_to_rank0)
            self.push = self._zmq.socket(zmq.PUSH)
            self.push.connect(cfg.rank0_to_front)
            self.poller = zmq.Poller()
            self.poller.register(self.pull, zmq.POLLIN)

    # ---- receiving ----
    def recv_requests(self) -> list:
        """Rank 0 drains the front's messages (blocking only when idle); every rank gets the same list."""
        msgs: list = []
        if self.rank == 0:
            idle = not self.running and not self.waiting
            timeout_ms = int(IDLE_HEARTBEAT_S * 1000) if idle else 0
            self.phases.enter("idle_wait")
            ready = self.poller.poll(timeout_ms)
            self.phases.enter("recv")
            if ready:
                while True:
                    try:
                        msgs.append(self.pull.recv_pyobj(zmq.NOBLOCK))
                    except zmq.Again:
                        break
        self.phases.enter("fanout")  # other ranks: waiting here for the entry rank, then unpickling
        msgs = broadcast_pyobj(msgs, self.rank)
        if os.getppid() != self.parent_pid:
            raise SystemExit(f"rank {self.rank}: front process is gone")
        return msgs

    # ---- the loop ----
    def run(self) -> None:
        while True:
            msgs = self.recv_requests()
            new: list[GenerateReq] = []
            shutdown = False
            for msg in msgs:
                if isinstance(msg, GenerateReq):
                    new.append(msg)
                elif isinstance(msg, AbortReq):
                    new = [r for r in new if r.rid != msg.rid]  # aborted before it was even processed
                    self.abort(msg.rid)
                elif isinstance(msg, SetFaults):
                    self.faults = msg.faults
                elif isinstance(msg, ShutdownReq):
                    shutdown = True
            self.phases.enter("mm_inputs")
            if new:
                self.process_new(new)
            self.phases.enter("admit")
            self.admit()
            self.forward()
            self.phases.enter("report")
            self.report()
            self.phases.enter(None)
            if shutdown:
                return

    def process_new(self, new: list[GenerateReq]) -> None:
        """The multimodal stage (one collective per received batch, as the mode decides), then queueing.

        Each request's inputs are popped right away, as sglang's scheduler takes them when it turns a
        received request into a Req; the tensors are dropped once digested (the stand-in model has used them).
        """
        cap = self.mm.cache_capacity
        for start in range(0, len(new), cap):  # prepare refuses a batch larger than its cache
            self._process_chunk(new[start : start + cap])

    def _process_chunk(self, new: list[GenerateReq]) -> None:
        with_mm = [MMRequest(r.rid, r.items) for r in new if r.items]
        if with_mm:
            self.mm.prepare(with_mm)
            # The group's stage time is its slowest rank's: the next collective waits for it.
            stage = torch.tensor([self.mm.last_stage_seconds], dtype=torch.float64)
            dist.all_reduce(stage, op=dist.ReduceOp.MAX)
            self._mm_stage_seconds.append(float(stage.item()))
        for req in new:
            mm_tokens = 0
            mm_digest = b""
            if req.items:
                outcome = self.mm.pop(req.rid)
                if isinstance(outcome, MMInputError):
                    self._events.append(ErrorEvent(req.rid, outcome.status, outcome.message))
                    continue
                mm_tokens = outcome.num_mm_tokens
                mm_digest = tensor_digest(outcome.tensors())
            sampler = TokenSampler(self.cfg.seed, req.digest, mm_digest)
            self.waiting.append(_Req(req.rid, req.text_tokens + mm_tokens, req.max_new_tokens, sampler))

    def abort(self, rid: str) -> None:
        self.waiting = deque(r for r in self.waiting if r.rid != rid)
        self.running = [r for r in self.running if r.rid != rid]
        self.mm.discard(rid)

    def admit(self) -> None:
        self._admitted = []
        while self.waiting and len(self.running) + len(self._admitted) < self.cfg.max_running_requests:
            req = self.waiting.popleft()
            if self.faults.cpu_burn_ms > 0:
                self.compute.burn_ms(self.faults.cpu_burn_ms)
            self.leak.retain(self.faults.leak_kib_per_request)
            self._admitted.append(req)

    def forward(self) -> None:
        """One prefill step for newly admitted requests, else one decode step for the running batch."""
        on_device = self.step_group is not None
        if self._admitted:
            batch = self._admitted
            new_tokens = sum(r.prompt_tokens for r in batch)
            self.phases.enter("forward")
            self.compute.step(scale=1.0 + new_tokens / PREFILL_TOKENS_PER_STEP_COST, wait=not on_device)
            self.running.extend(batch)
        elif self.running:
            batch = self.running
            self.phases.enter("forward")
            self.compute.step(wait=not on_device)
        else:
            return
        # Lockstep: every rank finishes the step before any starts the next (the TP all-reduce).
        self.phases.enter("all_reduce")
        self.sync.fill_(float(len(batch)))
        if on_device:
            dist.all_reduce(self.sync, op=dist.ReduceOp.SUM, group=self.step_group)
            self.compute.wait()
        else:
            dist.all_reduce(self.sync, op=dist.ReduceOp.SUM)
        self.phases.enter("sample")
        finished: list[str] = []
        for req in batch:
            token = req.sampler.next_token()
            req.generated += 1
            done = req.generated >= req.max_new_tokens
            if self.rank == 0:
                self._events.append(TokenEvent(req.rid, (token,), req.prompt_tokens, done))
            if done:
                finished.append(req.rid)
        if finished:
            gone = set(finished)
            self.running = [r for r in self.running if r.rid not in gone]

    def report(self) -> None:
        if self.rank != 0:
            self._events.clear()
            self._mm_stage_seconds.clear()
            return
        stats = SchedulerStats(
            num_running_reqs=len(self.running),
            num_queue_reqs=len(self.waiting),
            mm_cache_entries=self.mm.cache_size,
            mm_stage_seconds=tuple(self._mm_stage_seconds),
        )
        if self._events or stats != self._last_stats:
            phases: tuple[tuple[str, float, float], ...] = ()
            now = time.monotonic()
            if now - self._phases_sent_at >= PHASE_REPORT_INTERVAL_S:
                phases, self._phases_sent_at = self.phases.snapshot(), now
            self.push.send_pyobj(StepReport(tuple(self._events), stats, phases))
            self._events.clear()
            self._mm_stage_seconds.clear()
            self._last_stats = stats

    def close(self) -> None:
        self.mm.close()
        if self._zmq is not None:
            self.pull.close(linger=0)
            self.push.close(linger=1000)
            self._zmq.term()


def step_all_reduce_backend(requested: str, tp_size: int) -> str:
    """The per-step all-reduce's backend: NCCL needs a GPU per rank; "auto" takes it when there is one."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "nccl" and gpus < tp_size:
        raise RuntimeError(f"--step-all-reduce nccl needs a GPU per rank: {gpus} GPU(s) for TP={tp_size}")
    if requested == "gloo" or tp_size == 1:
        return "gloo"
    return "nccl" if gpus >= tp_size else "gloo"


def rank_main(cfg: RankConfig) -> None:
    """Entry point of a rank process (spawned by the front)."""
    # The front owns shutdown: a signal to the whole process group must not kill ranks mid-drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {cfg.rank}] %(levelname)s %(message)s")
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{cfg.master_port}",
            rank=cfg.rank,
            world_size=cfg.tp_size,
            timeout=timedelta(minutes=30),
        )
        # One GPU per rank where there are enough (as sglang places TP ranks); the CPU otherwise.
        device = f"cuda:{cfg.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
        step_backend = step_all_reduce_backend(cfg.step_all_reduce, cfg.tp_size)
        step_group: dist.ProcessGroup | None = None
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        if step_backend == "nccl":
            # Every rank takes the same decision (same flag, same host), so all join this collective call.
            group = dist.new_group(backend="nccl")
            assert isinstance(group, dist.ProcessGroup), "this rank is a member of the NCCL group"
            step_group = group
        compute = StepCompute(cfg.step_cost_ms, device=device)
        # Collective for the batched and sharded modes (they probe for shared memory between ranks).
        mm = make_strategy(cfg.mm_input_mode, group=dist.group.WORLD)
        scheduler = Scheduler(cfg, compute, mm, step_group)
        if step_group is not None:  # first NCCL call: communicators are set up here, before serving
            dist.all_reduce(scheduler.sync, group=step_group)
            compute.wait()
        dist.barrier()
        if cfg.rank == 0:
            scheduler.push.send_pyobj(
                RanksReady(cfg.tp_size, compute.matmuls_per_ms, device, step_all_reduce=step_backend)
            )
        try:
            scheduler.run()
        finally:
            scheduler.close()
        dist.destroy_process_group()
        logging.shutdown()
        # Skip interpreter teardown (seconds with torch loaded on a busy machine): nothing is left to flush.
        os._exit(0)
    except SystemExit:
        raise
    except BaseException as exc:
        log.exception("rank %d failed", cfg.rank)
        # Tell the front directly (any rank may fail), so it fails health instead of hanging.
        ctx: zmq.Context = zmq.Context.instance()
        failure_push = ctx.socket(zmq.PUSH)
        failure_push.connect(cfg.rank0_to_front)
        failure_push.send_pyobj(RankFailed(cfg.rank, f"{type(exc).__name__}: {exc}"))
        failure_push.close(linger=1000)
        raise SystemExit(1) from exc
