"""The strategies: one collective `prepare(batch)` per received batch, then `pop(rid)` per request.

Every rank of the group calls `prepare` with the same ordered batch (in sglang every scheduler rank holds
the raw requests after `recv_requests`). Each rank's cache then holds, per request, the materialized
inputs or the request's error; a bad request fails alone, identically on every rank, and the collectives
stay in step because every rank always takes part in the same sequence of them.

What is materialized is the strategy's `Materializer` (materializer.py): by default the image pipeline on
`MMRequest`s (the embedded backend); the sglang plugin passes upstream's processor-output conversion.
Who materializes, the error envelope, the cache and the transports are the same for every materializer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from .balance import assign
from .cache import DEFAULT_CACHE_CAPACITY, OutcomeCache
from .image_pipeline import ImagePipeline
from .materializer import Materializer, ShardedExchange, materialize_safely, stage_safely
from .modes import MMMode, parse_mode
from .packing import Keyed
from .processor import DEFAULT_PROFILE, VisionProfile
from .transport import ShareDescriptor, ShmTransport, TensorTransport, Transport, shm_usable
from .types import MMLimits


@dataclass(frozen=True)
class GroupInfo:
    """Where this process stands in the TP group. `source_rank` and `global_ranks` are global ranks."""

    group: dist.ProcessGroup | None
    rank: int  # rank within the group
    world_size: int
    source_rank: int
    global_ranks: tuple[int, ...]

    @property
    def is_source(self) -> bool:
        return self.global_ranks[self.rank] == self.source_rank


class MMStrategy:
    """Base: validation, the cache and the stage timer. Subclasses implement `_collect`."""

    mode: MMMode
    transport_name = "none"  # how results reach peers: none, pickle, shm or tensor

    def __init__(
        self, mode: MMMode, info: GroupInfo, cache_capacity: int, materializer: Materializer
    ) -> None:
        self.mode = mode
        self.info = info
        self.materializer = materializer
        self._cache = OutcomeCache(cache_capacity)
        self.last_stage_seconds = 0.0

    # -- public API ---------------------------------------------------------------------------------
    def prepare(self, batch: Sequence[Any]) -> None:
        """Collective: every rank calls it with the same batch; fills this rank's cache for each request."""
        requests, rids = self._checked(batch)
        if not requests:
            return
        start = time.perf_counter()
        keyed = self._collect(requests, rids)
        self.last_stage_seconds = time.perf_counter() - start
        got = [rid for rid, _ in keyed]
        if got != rids:
            raise RuntimeError(f"TP group out of step: expected outcomes for {rids[:5]}..., got {got[:5]}...")
        for rid, outcome in keyed:
            self._cache.put(outcome, rid)

    def pop(self, rid: str) -> Any:
        """The request's outcome (result or MMInputError), removed; KeyError (naming the rid) if absent."""
        return self._cache.pop(rid)

    def discard(self, rid: str) -> bool:
        """Drop an aborted request's entry; True if there was one."""
        return self._cache.discard(rid)

    def obtain(self, batch: Sequence[Any]) -> list[Any]:
        """Collective convenience: prepare then pop each request, in batch order (chunked to the capacity)."""
        requests = list(batch)
        out: list[Any] = []
        step = self._cache.capacity
        for start in range(0, len(requests), step):
            chunk = requests[start : start + step]
            self.prepare(chunk)
            out.extend(self._cache.pop(self.materializer.check(r, i)) for i, r in enumerate(chunk))
        return out

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    @property
    def cache_capacity(self) -> int:
        return self._cache.capacity

    @property
    def cache_evictions(self) -> int:
        return self._cache.evictions

    def close(self) -> None:
        self._cache.clear()

    # -- for subclasses -----------------------------------------------------------------------------
    def _collect(self, requests: list[Any], rids: list[str]) -> list[Keyed]:
        raise NotImplementedError

    def _checked(self, batch: Sequence[Any]) -> tuple[list[Any], list[str]]:
        # Deterministic checks before any collective, so every rank raises the same error or none does.
        requests = list(batch)
        rids: list[str] = []
        seen: set[str] = set()
        for index, request in enumerate(requests):
            rid = self.materializer.check(request, index)  # TypeError naming batch[index]
            if not isinstance(rid, str) or rid in seen:
                raise ValueError(f"batch[{index}] has a missing or repeated rid {rid!r}")
            seen.add(rid)
            rids.append(rid)
        if len(requests) > self._cache.capacity:
            raise ValueError(
                f"batch of {len(requests)} requests exceeds the cache capacity {self._cache.capacity}; "
                "use obtain() or a larger cache_capacity"
            )
        return requests, rids


class PerRankStrategy(MMStrategy):
    """Every rank materializes every request; no collective at all (sglang's default; also TP=1)."""

    def _collect(self, requests: list[Any], rids: list[str]) -> list[Keyed]:
        m = self.materializer
        return [(rid, materialize_safely(m, r, rid)) for r, rid in zip(requests, rids, strict=True)]


class PerRequestStrategy(MMStrategy):
    """The source materializes; one pickled `broadcast_object_list` per request (sglang PR #11910)."""

    transport_name = "pickle"

    def _collect(self, requests: list[Any], rids: list[str]) -> list[Keyed]:
        info = self.info
        out: list[Keyed] = []
        for request, rid in zip(requests, rids, strict=True):
            box: list[object] = [
                (rid, materialize_safely(self.materializer, request, rid)) if info.is_source else None
            ]
            dist.broadcast_object_list(box, src=info.source_rank, group=info.group)
            received = box[0]
            if not isinstance(received, tuple) or received[0] != rid:
                raise RuntimeError(f"TP group out of step: expected inputs of {rid!r}, got {received!r:.200}")
            out.append(received)
        return out


class BatchedStrategy(MMStrategy):
    """The source materializes the whole batch into one buffer; one broadcast of its descriptor."""

    def __init__(self, *args, transport: Transport, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport
        self.transport_name = transport.name

    def _collect(self, requests: list[Any], rids: list[str]) -> list[Keyed]:
        info = self.info
        local = None
        box: list[object] = [None]
        try:
            if info.is_source:
                staged = [
                    stage_safely(self.materializer, r, rid) for r, rid in zip(requests, rids, strict=True)
                ]
                local = self._transport.build(
                    staged, self.materializer, dict(zip(rids, requests, strict=True))
                )
                box[0] = local.descriptor
            dist.broadcast_object_list(box, src=info.source_rank, group=info.group)
            descriptor = box[0]
            assert isinstance(descriptor, ShareDescriptor)
            [keyed] = self._transport.exchange(
                [descriptor],
                [info.source_rank],
                local,
                info.group,
                self.materializer,
                dict(zip(rids, requests, strict=True)),
            )
        finally:
            if local is not None:
                local.release()
        return keyed


class ShardedStrategy(MMStrategy):
    """Each rank materializes its share of the batch; every rank gets every share.

    By whole requests: each rank stages its share into one buffer (a shared-memory segment on one host, one
    byte-tensor broadcast across hosts) and one `all_gather_object` shares the descriptors. A materializer
    may bring a finer split for ranks sharing memory (the image pipeline's `sharded_shm`: plan units and
    patch rows), used on one host."""

    def __init__(self, *args, transport: Transport, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport
        self.transport_name = transport.name
        info = self.info
        self._fine: ShardedExchange | None = None
        self._batches = 0  # batches collected: rotates the owner of ties (same count on every rank)
        if isinstance(transport, ShmTransport):
            self._fine = self.materializer.sharded_exchange(info.group, info.rank, info.world_size)

    def close(self) -> None:
        super().close()
        if self._fine is not None:
            self._fine.close()

    def _collect(self, requests: list[Any], rids: list[str]) -> list[Keyed]:
        if self._fine is not None:
            return self._fine.collect(requests)
        info = self.info
        # Rotated per batch (every rank counts the same batches), so one-request batches spread over the ranks.
        owners = assign(
            [self.materializer.cost(r) for r in requests],
            info.world_size,
            first=self._batches % info.world_size,
        )
        self._batches += 1
        local = None
        try:
            staged = [
                stage_safely(self.materializer, r, rid)
                for r, rid, owner in zip(requests, rids, owners, strict=True)
                if owner == info.rank
            ]
            by_rid = dict(zip(rids, requests, strict=True))
            local = self._transport.build(staged, self.materializer, by_rid)
            gathered: list[object] = [None] * info.world_size
            dist.all_gather_object(gathered, local.descriptor, group=info.group)
            descriptors = [d for d in gathered if isinstance(d, ShareDescriptor)]
            if len(descriptors) != info.world_size:
                raise RuntimeError(f"TP group out of step: expected share descriptors, got {gathered!r:.200}")
            shares = self._transport.exchange(
                descriptors, info.global_ranks, local, info.group, self.materializer, by_rid
            )
        finally:
            if local is not None:
                local.release()
        # Back to batch order: each share lists its owner's requests in batch order.
        cursors = [iter(share) for share in shares]
        return [next(cursors[owner]) for owner in owners]


def make_strategy(
    mode: MMMode | str,
    *,
    group=None,
    src_rank: int | None = None,
    cache_capacity: int = DEFAULT_CACHE_CAPACITY,
    limits: MMLimits | None = None,
    profile: VisionProfile | None = None,
    materializer: Materializer | None = None,
) -> MMStrategy:
    """The strategy for `mode` on this rank.

    `group` is the TP group's CPU (gloo) process group; None, or a group of one, means TP=1: requests are
    materialized in-process and no collective runs, whatever the mode. `src_rank` is the global rank of the
    entry rank; by default the group's first rank (sglang's `dp_tp_group.first_rank`). Collective when the
    mode is `batched` or `sharded` with a group: every rank must call it together (it probes whether the
    ranks share a host, to pick shared memory or tensor collectives). `materializer` says what is
    materialized; by default `ImagePipeline(limits, profile)` on `MMRequest`s (give one or the other).
    """
    mode = parse_mode(mode)
    chosen: Materializer
    if materializer is None:
        chosen = ImagePipeline(limits or MMLimits(), profile or DEFAULT_PROFILE)
    elif limits is not None or profile is not None:
        raise ValueError("give either a materializer or limits/profile (the image pipeline's), not both")
    else:
        chosen = materializer
    info = _group_info(group, src_rank)
    common = (mode, info, cache_capacity, chosen)
    if info.world_size == 1 or mode == MMMode.PER_RANK:
        return PerRankStrategy(*common)
    if mode == MMMode.PER_REQUEST:
        return PerRequestStrategy(*common)
    transport: Transport
    if mode == MMMode.SHARDED_TENSOR:
        transport = TensorTransport()
    else:
        transport = ShmTransport() if shm_usable(group, info.world_size) else TensorTransport()
    if mode == MMMode.BATCHED:
        return BatchedStrategy(*common, transport=transport)
    return ShardedStrategy(*common, transport=transport)


def _group_info(group, src_rank: int | None) -> GroupInfo:
    if group is None or not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise ValueError("a process group was given but torch.distributed is not initialized")
        return GroupInfo(None, 0, 1, 0, (0,))
    world_size = dist.get_world_size(group=group)
    rank = dist.get_rank(group=group)
    global_ranks = tuple(dist.get_global_rank(group, i) for i in range(world_size))
    source = global_ranks[0] if src_rank is None else src_rank
    if source not in global_ranks:
        raise ValueError(
            f"src_rank {src_rank} is not a member of the group (global ranks {list(global_ranks)})"
        )
    return GroupInfo(group, rank, world_size, source, global_ranks)
