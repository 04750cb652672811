"""The recommended mode on one host: materialization split across the TP ranks, results in shared memory.

Two phases per batch, so no rank waits on another's whole request:
1. Decode + resize. The batch is cut into plan units (an image, or one temporal patch of a video: two
   frames), spread over the ranks largest first. Each rank writes its units' uint8 frames into its own
   input segment. One `all_gather_object` shares the small unit records and segment handles.
2. Normalize + patchify. Now every rank knows every output shape, so all derive the same layout of one
   output segment (created empty by the group's first rank, sized by each rank before mapping) and the
   same even split of its patch rows. Each rank writes its rows, reading peers' uint8 frames in place.
   A barrier, then every rank maps the output privately; the tensors it returns are views of it.
Values are computed elementwise, so they are bitwise those of single-process materialization. A request
fails with the error of its first failing unit (item order, then frame order), as it would in one process.
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist

from . import shm
from .balance import assign, sources_cost
from .processor import VisionProfile, check_structure, load_frames, patchify_into, resize_target
from .sources import InputRejected, image_size, load_source_bytes
from .types import MaterializedInputs, MMInputError, MMLimits, MMRequest, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanUnit:
    request: int  # index in the batch
    item: int
    group: int  # temporal patch of a video; 0 for an image
    video: bool
    sources: tuple[str, ...]
    size_source: str | None  # a later temporal patch of a video takes its size from the first frame
    pad: int  # copies of the last frame that complete the video's last temporal patch
    cost: int


@dataclass(frozen=True)
class UnitResult:
    """Pickled to peers: where a unit's uint8 frames (n, H, W, 3) lie in its owner's segment, or its error."""

    unit: int
    offset: int = 0
    shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    status: int = 0
    message: str = ""


@dataclass(frozen=True)
class RankShare:
    """What each rank contributes to a batch's all-gather."""

    input_handle: shm.SegmentHandle | None
    results: tuple[UnitResult, ...]
    released: tuple[int, ...]  # output segments whose tensors died on this rank since its last report
    spare: tuple[int, shm.SegmentHandle] | None  # the first rank: an empty segment, used if none is free


def build_units(
    requests: Sequence[MMRequest], limits: MMLimits, profile: VisionProfile
) -> tuple[list[PlanUnit], dict[int, MMInputError]]:
    """Plan units of the batch in (request, item, temporal patch) order, and requests refused outright."""
    tp = profile.temporal_patch_size
    units: list[PlanUnit] = []
    refused: dict[int, MMInputError] = {}
    for r, request in enumerate(requests):
        try:
            check_structure(request, limits)
        except InputRejected as exc:
            refused[r] = MMInputError(request.rid, exc.status, exc.message)
            continue
        for i, item in enumerate(request.items):
            if item.modality == "image":
                units.append(PlanUnit(r, i, 0, False, item.sources, None, 0, sources_cost(item.sources)))
                continue
            for g, start in enumerate(range(0, len(item.sources), tp)):
                frames = item.sources[start : start + tp]
                size_source = item.sources[0] if g else None
                units.append(
                    PlanUnit(r, i, g, True, frames, size_source, tp - len(frames), sources_cost(frames))
                )
    return units, refused


def plan_unit(unit: PlanUnit, limits: MMLimits, profile: VisionProfile) -> list[np.ndarray] | MMInputError:
    """The unit's decoded, resized (H, W, 3) uint8 frames, padded; or its error."""
    try:
        size = None
        if unit.size_source is not None:
            width, height = image_size(load_source_bytes(unit.size_source, limits), limits)
            size = resize_target(width, height, profile, video=True)
        frames = load_frames(list(unit.sources), limits, profile, video=unit.video, size=size)
        return frames + [frames[-1]] * unit.pad
    except InputRejected as exc:
        return MMInputError("", exc.status, f"item {unit.item}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - fails this request only, on every rank
        log.exception("materializing a unit of item %d failed", unit.item)
        return MMInputError("", 500, f"multimodal input processing failed: {type(exc).__name__}: {exc}")


@dataclass
class _Clip:
    """One image or one temporal patch of a video, placed in the output."""

    unit: int
    out_row: int  # first output row of this clip (absolute, in rows of patch_dim floats)
    blocks: int  # rows of merge blocks
    rows_per_block: int


class _Mapping(mmap.mmap):
    """An mmap that can carry a weakref finalizer (plain mmap objects take no weak references)."""


class ShardedShmExchange:
    """Per-rank state of the sharded mode on one host: segments kept mapped across batches.

    Writing fresh shared memory costs a page fault per 4 KiB (shmem gets no transparent huge pages), as
    much as a fifth of the normalization itself; so segments are reused. Each rank keeps one input segment
    (free again after each batch's final barrier). Output segments form a pool whose bookkeeping every rank
    replicates from the all-gathered reports: a segment is free again once every rank has reported that
    the tensors over it are gone; each batch takes the largest free one, or the spare (an empty segment
    the first rank creates ahead, so no extra collective is needed). At most `pool_keep` free segments and
    `pool_bytes` free bytes are kept; the rest are closed.
    """

    def __init__(self, group, rank: int, world_size: int, *, pool_keep: int = 2, pool_bytes: int = 8 << 30):
        self.group, self.rank, self.world_size = group, rank, world_size
        self.pool_keep, self.pool_bytes = pool_keep, pool_bytes
        self._input_fd: int | None = None
        self._input_map: mmap.mmap | None = None
        self._input_size = 0
        self._peer_inputs: dict[tuple[int, int], tuple[mmap.mmap, int]] = {}
        # Seg ids whose tensors died on this rank, not yet reported. Finalizers may run on any thread: a
        # deque's append and popleft are atomic, so none is lost between reading and clearing.
        self._released: deque[int] = deque()
        # Replicated on every rank: the pool's segments, their sizes, the free ones, who still holds each.
        self._handles: dict[int, shm.SegmentHandle] = {}
        self._sizes: dict[int, int] = {}
        self._free: list[int] = []
        self._pending: dict[int, set[int]] = {}
        # This rank's descriptor and shared mapping of each pool segment it has used.
        self._mapped: dict[int, tuple[int, mmap.mmap | None, int]] = {}
        # The first rank only: the descriptors it created, and the next id.
        self._owned: dict[int, int] = {}
        self._spare: tuple[int, shm.SegmentHandle] | None = None
        self._next_id = 0
        self._batches = 0  # batches collected: rotates the owner of ties (same count on every rank)

    @property
    def pooled_segments(self) -> int:
        return len(self._handles)

    def collect(
        self, requests: Sequence[MMRequest], limits: MMLimits, profile: VisionProfile
    ) -> list[Outcome]:
        rank, world_size = self.rank, self.world_size
        units, refused = build_units(requests, limits, profile)
        # Rotated per batch (every rank counts the same batches), so one-unit batches spread over the ranks.
        owners = assign([u.cost for u in units], world_size, first=self._batches % world_size)
        self._batches += 1
        # Phase 1: decode + resize my units into my input segment.
        results: list[UnitResult] = []
        planned: dict[int, list[np.ndarray]] = {}
        offset = 0
        for k in (k for k, owner in enumerate(owners) if owner == rank):
            value = plan_unit(units[k], limits, profile)
            if isinstance(value, MMInputError):
                results.append(UnitResult(k, status=value.status, message=value.message))
            else:
                planned[k] = value
                h, w, c = value[0].shape
                results.append(UnitResult(k, offset, (len(value), h, w, c)))
                offset += shm.aligned(len(value) * value[0].nbytes)
        input_handle = self._write_input(results, planned, offset) if offset else None
        del planned
        if rank == 0 and self._spare is None:
            seg_id, self._next_id = self._next_id, self._next_id + 1
            self._owned[seg_id] = shm.create_memfd("mminputs-out")
            self._spare = (
                seg_id,
                shm.SegmentHandle(shm.host_identity(), os.getpid(), self._owned[seg_id], 0),
            )
        released = tuple(_drain(self._released))
        share = RankShare(input_handle, tuple(results), released, self._spare)
        shares: list = [None] * world_size
        dist.all_gather_object(shares, share, group=self.group)
        self._take_back([s.released for s in shares])

        # Every rank now derives the same outcomes, layout, output segment and split of the work.
        unit_results: dict[int, tuple[int, UnitResult]] = {}
        for owner, other in enumerate(shares):
            for res in other.results:
                unit_results[res.unit] = (owner, res)
        placed, clips, total = _layout(requests, units, unit_results, refused, profile)
        out_map = None
        if total:
            seg_id = self._lend(total, shares[0].spare)
            fd, shared = self._output_segment(seg_id, total)
            _normalize_my_rows(clips, self, units, unit_results, shares, shared, profile)
            dist.barrier(group=self.group)  # every row written; peers done reading input segments
            out_map = _Mapping(fd, total, flags=mmap.MAP_PRIVATE)
            weakref.finalize(out_map, self._released.append, seg_id)
        else:
            dist.barrier(group=self.group)  # peers may still be reading my input segment
        return _outcomes(requests, placed, out_map, profile)

    def close(self) -> None:
        self._peer_inputs.clear()
        for fd, _, _ in self._mapped.values():
            os.close(fd)
        self._mapped.clear()
        for fd in self._owned.values():
            os.close(fd)
        self._owned.clear()
        self._spare = None
        self._handles.clear()
        self._free.clear()
        self._pending.clear()
        self._input_map = None
        if self._input_fd is not None:
            os.close(self._input_fd)
            self._input_fd = None

    # -- output pool, replicated on every rank ------------------------------------------------------
    def _take_back(self, released_by_rank: list[tuple[int, ...]]) -> None:
        for rank, released in enumerate(released_by_rank):
            for seg_id in released:
                waiting = self._pending.get(seg_id)
                if waiting is None:
                    continue
                waiting.discard(rank)
                if not waiting:
                    del self._pending[seg_id]
                    self._free.append(seg_id)
        self._free.sort(key=lambda i: (-self._sizes[i], i))
        kept: list[int] = []
        kept_bytes = 0
        for seg_id in self._free:
            if len(kept) < self.pool_keep and kept_bytes + self._sizes[seg_id] <= self.pool_bytes:
                kept.append(seg_id)
                kept_bytes += self._sizes[seg_id]
            else:
                self._retire(seg_id)
        self._free = kept

    def _lend(self, total: int, spare: tuple[int, shm.SegmentHandle] | None) -> int:
        if self._free:
            seg_id = self._free.pop(0)  # the largest free one: fewest regrowths
        else:
            assert spare is not None, "the first rank always offers a spare segment"
            seg_id, handle = spare
            self._handles[seg_id] = handle
            self._sizes[seg_id] = 0
            if self.rank == 0:
                self._spare = None  # a new spare is made before the next batch
        self._sizes[seg_id] = max(self._sizes[seg_id], total)
        self._pending[seg_id] = set(range(self.world_size))
        return seg_id

    def _retire(self, seg_id: int) -> None:
        del self._handles[seg_id], self._sizes[seg_id]
        fd, _, _ = self._mapped.pop(seg_id, (-1, None, 0))
        if fd >= 0:
            os.close(fd)
        if seg_id in self._owned:
            os.close(self._owned.pop(seg_id))

    def _output_segment(self, seg_id: int, total: int) -> tuple[int, mmap.mmap]:
        fd, shared, size = self._mapped.get(seg_id, (-1, None, 0))
        if fd < 0:
            fd = shm.open_peer_fd(self._handles[seg_id], writable=True)
        if shared is None or size < total:
            if os.fstat(fd).st_size < total:
                os.ftruncate(fd, total)  # every rank grows it to the same size; the order does not matter
            shared, size = mmap.mmap(fd, total), total
        self._mapped[seg_id] = (fd, shared, size)
        return fd, shared

    # -- input segment ------------------------------------------------------------------------------
    def _write_input(self, results, planned, nbytes: int) -> shm.SegmentHandle:
        if self._input_fd is None:
            self._input_fd = shm.create_memfd("mminputs-in")
        if nbytes > self._input_size:
            os.ftruncate(self._input_fd, nbytes)
            self._input_map = mmap.mmap(self._input_fd, nbytes)
            self._input_size = nbytes
        assert self._input_map is not None
        for res in results:
            if not res.status:
                n, h, w, c = res.shape
                slots = np.frombuffer(self._input_map, np.uint8, n * h * w * c, res.offset).reshape(res.shape)
                for slot, frame in zip(slots, planned[res.unit], strict=True):
                    slot[...] = frame  # straight from the decoder's array: no intermediate stack
        return shm.SegmentHandle(shm.host_identity(), os.getpid(), self._input_fd, self._input_size)

    def input_frames(self, owner: int, handle: shm.SegmentHandle, res: UnitResult) -> np.ndarray:
        if owner == self.rank:
            buffer = self._input_map
        else:
            key = (handle.pid, handle.fd)
            cached = self._peer_inputs.get(key)
            if cached is None or cached[1] < handle.nbytes:
                fd = shm.open_peer_fd(handle)
                try:
                    cached = (mmap.mmap(fd, handle.nbytes, prot=mmap.PROT_READ), handle.nbytes)
                finally:
                    os.close(fd)
                self._peer_inputs[key] = cached
            buffer = cached[0]
        n, h, w, c = res.shape
        return np.frombuffer(buffer, np.uint8, n * h * w * c, res.offset).reshape(n, h, w, c)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Placed:
    """A request that succeeded: its grids, token count and spans (byte offset, rows) in the output."""

    image_grid_thw: tuple[tuple[int, int, int], ...]
    video_grid_thw: tuple[tuple[int, int, int], ...]
    num_mm_tokens: int
    image_span: tuple[int, int] | None
    video_span: tuple[int, int] | None


def _layout(requests, units, unit_results, refused, profile: VisionProfile):
    """Per request its error or its placement; the clips to normalize; the output size in bytes."""
    p, m = profile.patch_size, profile.merge_size
    by_request: dict[int, list[int]] = {}
    for k, unit in enumerate(units):
        by_request.setdefault(unit.request, []).append(k)
    placed: list[MMInputError | _Placed] = []
    clips: list[_Clip] = []
    offset = 0
    row_bytes = profile.patch_dim * 4
    for r, request in enumerate(requests):
        if r in refused:
            placed.append(refused[r])
            continue
        ks = by_request.get(r, [])
        failed = next((unit_results[k][1] for k in ks if unit_results[k][1].status), None)
        if failed is not None:
            placed.append(MMInputError(request.rid, failed.status, failed.message))
            continue
        grids: dict[bool, list[tuple[int, int, int]]] = {False: [], True: []}
        spans: dict[bool, tuple[int, int] | None] = {}
        for video in (False, True):
            kind = [k for k in ks if units[k].video == video]
            if not kind:
                spans[video] = None
                continue
            first_row, rows = offset // row_bytes, 0
            for k in kind:
                _, h, w, _ = unit_results[k][1].shape
                gh, gw = h // p, w // p
                if units[k].group == 0:
                    grids[video].append((0, gh, gw))
                t, _, _ = grids[video][-1]
                grids[video][-1] = (t + 1, gh, gw)  # a video counts one temporal patch per unit
                clips.append(_Clip(k, first_row + rows, gh // m, gw * m))
                rows += gh * gw
            spans[video] = (offset, rows)
            offset += shm.aligned(rows * row_bytes)
        tokens = sum(t * h * w for t, h, w in grids[False] + grids[True]) // (m * m)
        placed.append(_Placed(tuple(grids[False]), tuple(grids[True]), tokens, spans[False], spans[True]))
    return placed, clips, offset


def _normalize_my_rows(clips, exchange: ShardedShmExchange, units, unit_results, shares, shared_out, profile):
    """Normalize this rank's contiguous share of all patch rows into the shared output."""
    total = sum(c.blocks * c.rows_per_block for c in clips)
    lo = total * exchange.rank // exchange.world_size
    hi = total * (exchange.rank + 1) // exchange.world_size
    out = np.frombuffer(shared_out, dtype=np.float32).reshape(-1, profile.patch_dim)
    tp = profile.temporal_patch_size
    cursor = 0
    for clip in clips:
        clip_rows = clip.blocks * clip.rows_per_block
        start, end = cursor, cursor + clip_rows
        cursor = end
        if end <= lo or start >= hi:
            continue
        # Whole block rows whose first row falls in [lo, hi): every row lands in exactly one rank's share.
        b0 = max(0, -(-(lo - start) // clip.rows_per_block))
        b1 = min(clip.blocks, -(-(hi - start) // clip.rows_per_block))
        if b1 <= b0:
            continue
        owner, res = unit_results[clip.unit]
        frames = exchange.input_frames(owner, shares[owner].input_handle, res)
        if not units[clip.unit].video:
            frames = np.broadcast_to(frames[0], (tp, *frames.shape[1:]))
        rows = out[clip.out_row : clip.out_row + clip_rows]
        patchify_into(frames, rows, profile, block_rows=(b0, b1))


def _outcomes(requests, placed, out_map, profile: VisionProfile) -> list[Outcome]:
    final: list[Outcome] = []
    for request, entry in zip(requests, placed, strict=True):
        if isinstance(entry, MMInputError):
            final.append(entry)
            continue
        final.append(
            MaterializedInputs(
                rid=request.rid,
                pixel_values=_view(out_map, entry.image_span, profile),
                image_grid_thw=entry.image_grid_thw,
                pixel_values_videos=_view(out_map, entry.video_span, profile),
                video_grid_thw=entry.video_grid_thw,
                num_mm_tokens=entry.num_mm_tokens,
            )
        )
    return final


def _view(out_map, span, profile: VisionProfile):
    if span is None:
        return None
    offset, rows = span
    return shm.tensor_view(out_map, offset, (rows, profile.patch_dim))


def _drain(items: deque[int]) -> list[int]:
    out = []
    while True:
        try:
            out.append(items.popleft())
        except IndexError:
            return out
