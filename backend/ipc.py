"""Messages between the HTTP front process and the entry scheduler rank (pickled over ZMQ), and the
per-iteration broadcast from the entry rank to the other ranks (sglang's broadcast_pyobj shape)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

from backend.faults import FaultSettings
from mminputs.types import MMItem

# ---- front -> entry rank (and, rebroadcast, every rank) ----


@dataclass(frozen=True)
class GenerateReq:
    rid: str
    items: tuple[MMItem, ...]
    text_tokens: int
    max_new_tokens: int
    digest: bytes  # request_digest(): what generation is seeded with besides the server seed


@dataclass(frozen=True)
class AbortReq:
    rid: str


@dataclass(frozen=True)
class SetFaults:
    faults: FaultSettings


@dataclass(frozen=True)
class ShutdownReq:
    pass


# ---- entry rank -> front ----


@dataclass(frozen=True)
class TokenEvent:
    rid: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finished: bool


@dataclass(frozen=True)
class ErrorEvent:
    rid: str
    status: int
    message: str


@dataclass(frozen=True)
class SchedulerStats:
    num_running_reqs: int
    num_queue_reqs: int
    mm_cache_entries: int
    mm_stage_seconds: tuple[float, ...] = ()  # one wall time per multimodal batch since the last report


@dataclass(frozen=True)
class StepReport:
    events: tuple[TokenEvent | ErrorEvent, ...]
    stats: SchedulerStats
    # The entry rank's cumulative (phase, wall s, CPU s) of its loop, on about one report a second.
    phases: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class RanksReady:
    tp_size: int
    matmuls_per_ms: float
    device: str
    step_all_reduce: str = "gloo"  # backend of the per-step all-reduce (nccl: one GPU per rank)


@dataclass(frozen=True)
class RankFailed:
    rank: int
    message: str


def broadcast_pyobj(obj: list | None, rank: int, src: int = 0) -> list:
    """Broadcast a list from `src` to every rank: one size collective, plus the bytes when non-empty."""
    if rank == src:
        data = pickle.dumps(obj) if obj else b""
        size = torch.tensor([len(data)], dtype=torch.long)
        dist.broadcast(size, src)
        if data:
            dist.broadcast(torch.frombuffer(bytearray(data), dtype=torch.uint8), src)
        return list(obj or [])
    size = torch.zeros(1, dtype=torch.long)
    dist.broadcast(size, src)
    n = int(size.item())
    if n == 0:
        return []
    buf = torch.empty(n, dtype=torch.uint8)
    dist.broadcast(buf, src)
    return pickle.loads(buf.numpy().tobytes())
