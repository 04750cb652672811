"""The strategies: one collective `prepare(batch)` per received batch, then `pop(rid)` per request.

Every rank of the group calls `prepare` with the same ordered batch (in sglang every scheduler rank holds
the raw requests after `recv_requests`). Each rank's cache then holds, per request, the materialized
inputs or the request's error; a bad request fails alone, identically on every rank, and the collectives
stay in step because every rank always takes part in the same sequence of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch.distributed as dist

from . import sharded_shm
from .balance import assign, sources_cost
from .cache import DEFAULT_CACHE_CAPACITY, OutcomeCache
from .modes import MMMode, parse_mode
from .packing import plan_safely
from .processor import DEFAULT_PROFILE, VisionProfile, finish
from .transport import ShareDescriptor, ShmTransport, TensorTransport, Transport, shm_usable
from .types import MMInputError, MMLimits, MMRequest, Outcome


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
        self, mode: MMMode, info: GroupInfo, cache_capacity: int, limits: MMLimits, profile: VisionProfile
    ) -> None:
        self.mode = mode
        self.info = info
        self.limits = limits
        self.profile = profile
        self._cache = OutcomeCache(cache_capacity)
        self.last_stage_seconds = 0.0

    # -- public API ---------------------------------------------------------------------------------
    def prepare(self, batch: Sequence[MMRequest]) -> None:
        """Collective: every rank calls it with the same batch; fills this rank's cache for each request."""
        requests = self._checked(batch)
        if not requests:
            return
        start = time.perf_counter()
        outcomes = self._collect(requests)
        self.last_stage_seconds = time.perf_counter() - start
        for outcome in outcomes:
            self._cache.put(outcome)

    def pop(self, rid: str) -> Outcome:
        """The request's outcome, removed from the cache; KeyError (naming the rid) if it is not there."""
        return self._cache.pop(rid)

    def discard(self, rid: str) -> bool:
        """Drop an aborted request's entry; True if there was one."""
        return self._cache.discard(rid)

    def obtain(self, batch: Sequence[MMRequest]) -> list[Outcome]:
        """Collective convenience: prepare then pop each request, in batch order (chunked to the capacity)."""
        requests = list(batch)
        out: list[Outcome] = []
        step = self._cache.capacity
        for start in range(0, len(requests), step):
            chunk = requests[start : start + step]
            self.prepare(chunk)
            out.extend(self._cache.pop(r.rid) for r in chunk)
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
    def _collect(self, requests: list[MMRequest]) -> list[Outcome]:
        raise NotImplementedError

    def _materialize(self, request: MMRequest) -> Outcome:
        planned = plan_safely(request, self.limits, self.profile)
        return planned if isinstance(planned, MMInputError) else finish(planned, self.profile)

    def _checked(self, batch: Sequence[MMRequest]) -> list[MMRequest]:
        # Deterministic checks before any collective, so every rank raises the same error or none does.
        requests = list(batch)
        seen: set[str] = set()
        for index, request in enumerate(requests):
            if not isinstance(request, MMRequest):
                raise TypeError(f"batch[{index}] is {type(request).__name__}, expected MMRequest")
            if not isinstance(request.rid, str) or request.rid in seen:
                raise ValueError(f"batch[{index}] has a missing or repeated rid {request.rid!r}")
            seen.add(request.rid)
        if len(requests) > self._cache.capacity:
            raise ValueError(
                f"batch of {len(requests)} requests exceeds the cache capacity {self._cache.capacity}; "
                "use obtain() or a larger cache_capacity"
            )
        return requests


class PerRankStrategy(MMStrategy):
    """Every rank materializes every request; no collective at all (sglang's default; also TP=1)."""

    def _collect(self, requests: list[MMRequest]) -> list[Outcome]:
        return [self._materialize(r) for r in requests]


class PerRequestStrategy(MMStrategy):
    """The source materializes; one pickled `broadcast_object_list` per request (sglang PR #11910)."""

    transport_name = "pickle"

    def _collect(self, requests: list[MMRequest]) -> list[Outcome]:
        info = self.info
        out: list[Outcome] = []
        for request in requests:
            box: list[object] = [self._materialize(request) if info.is_source else None]
            dist.broadcast_object_list(box, src=info.source_rank, group=info.group)
            outcome = box[0]
            if not isinstance(outcome, (MMInputError,)) and getattr(outcome, "rid", None) != request.rid:
                raise RuntimeError(
                    f"TP group out of step: expected inputs of {request.rid!r}, got {outcome!r:.200}"
                )
            out.append(outcome)  # type: ignore[arg-type]
        return out


class BatchedStrategy(MMStrategy):
    """The source materializes the whole batch into one buffer; one broadcast of its descriptor."""

    def __init__(self, *args, transport: Transport, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport
        self.transport_name = transport.name

    def _collect(self, requests: list[MMRequest]) -> list[Outcome]:
        info = self.info
        local = None
        box: list[object] = [None]
        try:
            if info.is_source:
                planned = [plan_safely(r, self.limits, self.profile) for r in requests]
                local = self._transport.build(planned, self.profile)
                box[0] = local.descriptor
            dist.broadcast_object_list(box, src=info.source_rank, group=info.group)
            descriptor = box[0]
            assert isinstance(descriptor, ShareDescriptor)
            [outcomes] = self._transport.exchange(
                [descriptor], [info.source_rank], local, info.group, self.profile
            )
        finally:
            if local is not None:
                local.release()
        _check_order(requests, outcomes)
        return outcomes


class ShardedStrategy(MMStrategy):
    """Each rank materializes its share of the batch; every rank gets every share.

    On one host the split is by plan units and patch rows through shared memory (`sharded_shm`); across
    hosts by whole requests, each rank's share travelling as one float32 tensor broadcast."""

    def __init__(self, *args, transport: Transport, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport
        self.transport_name = transport.name
        info = self.info
        self._exchange = sharded_shm.ShardedShmExchange(info.group, info.rank, info.world_size)

    def close(self) -> None:
        super().close()
        self._exchange.close()

    def _collect(self, requests: list[MMRequest]) -> list[Outcome]:
        info = self.info
        if isinstance(self._transport, ShmTransport):
            # One host: split finer than whole requests (see sharded_shm), results in shared memory.
            outcomes = self._exchange.collect(requests, self.limits, self.profile)
            _check_order(requests, outcomes)
            return outcomes
        owners = assign_owners(requests, info.world_size)
        mine = [r for r, owner in zip(requests, owners, strict=True) if owner == info.rank]
        local = None
        try:
            planned = [plan_safely(r, self.limits, self.profile) for r in mine]
            local = self._transport.build(planned, self.profile)
            descriptors: list[object] = [None] * info.world_size
            dist.all_gather_object(descriptors, local.descriptor, group=info.group)
            shares = self._transport.exchange(descriptors, info.global_ranks, local, info.group, self.profile)  # type: ignore[arg-type]
        finally:
            if local is not None:
                local.release()
        # Back to batch order: each share lists its owner's requests in batch order.
        cursors = [iter(share) for share in shares]
        outcomes = [next(cursors[owner]) for owner in owners]
        _check_order(requests, outcomes)
        return outcomes


def assign_owners(requests: Sequence[MMRequest], world_size: int) -> list[int]:
    """Group rank that materializes each whole request (the tensor-collective path)."""
    return assign([sources_cost([s for item in r.items for s in item.sources]) for r in requests], world_size)


def _check_order(requests: Sequence[MMRequest], outcomes: Sequence[Outcome]) -> None:
    got = [o.rid for o in outcomes]
    want = [r.rid for r in requests]
    if got != want:
        raise RuntimeError(f"TP group out of step: expected outcomes for {want[:5]}..., got {got[:5]}...")


def make_strategy(
    mode: MMMode | str,
    *,
    group=None,
    src_rank: int | None = None,
    cache_capacity: int = DEFAULT_CACHE_CAPACITY,
    limits: MMLimits | None = None,
    profile: VisionProfile | None = None,
) -> MMStrategy:
    """The strategy for `mode` on this rank.

    `group` is the TP group's CPU (gloo) process group; None, or a group of one, means TP=1: requests are
    materialized in-process and no collective runs, whatever the mode. `src_rank` is the global rank of the
    entry rank; by default the group's first rank (sglang's `dp_tp_group.first_rank`). Collective when the
    mode is `batched` or `sharded` with a group: every rank must call it together (it probes whether the
    ranks share a host, to pick shared memory or tensor collectives).
    """
    mode = parse_mode(mode)
    limits = limits or MMLimits()
    profile = profile or DEFAULT_PROFILE
    info = _group_info(group, src_rank)
    common = (mode, info, cache_capacity, limits, profile)
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
