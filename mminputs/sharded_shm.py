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
    input_handle: shm.SegmentHandle | None
    results: tuple[UnitResult, ...]
    output_handle: shm.SegmentHandle | None  # the group's first rank only


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


def plan_unit(unit: PlanUnit, limits: MMLimits, profile: VisionProfile) -> np.ndarray | MMInputError:
    try:
        size = None
        if unit.size_source is not None:
            width, height = image_size(load_source_bytes(unit.size_source, limits), limits)
            size = resize_target(width, height, profile, video=True)
        frames = load_frames(list(unit.sources), limits, profile, video=unit.video, size=size)
        frames += [frames[-1]] * unit.pad
        return np.stack(frames)
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


def collect(
    requests: Sequence[MMRequest], group, rank: int, world_size: int, limits: MMLimits, profile: VisionProfile
) -> list[Outcome]:
    units, refused = build_units(requests, limits, profile)
    owners = assign([u.cost for u in units], world_size)
    own_fds: list[int] = []
    maps: dict[int, mmap.mmap] = {}
    try:
        # Phase 1: decode + resize my units into my input segment.
        mine = [k for k, owner in enumerate(owners) if owner == rank]
        planned = {k: plan_unit(units[k], limits, profile) for k in mine}
        results: list[UnitResult] = []
        offset = 0
        for k in mine:
            value = planned[k]
            if isinstance(value, MMInputError):
                results.append(UnitResult(k, status=value.status, message=value.message))
            else:
                n, h, w, c = value.shape
                results.append(UnitResult(k, offset, (n, h, w, c)))
                offset += shm.aligned(value.nbytes)
        input_handle = None
        if offset:
            fd = shm.create_memfd("mminputs-in")
            own_fds.append(fd)
            os.ftruncate(fd, offset)
            writer = mmap.mmap(fd, offset)
            for res in results:
                if not res.status:
                    value = planned[res.unit]
                    assert isinstance(value, np.ndarray)
                    np.frombuffer(writer, np.uint8, value.nbytes, res.offset).reshape(value.shape)[...] = (
                        value
                    )
            maps[rank] = writer
            input_handle = shm.SegmentHandle(shm.host_identity(), os.getpid(), fd, offset)
        del planned
        output_handle = None
        if rank == 0:
            fd = shm.create_memfd("mminputs-out")
            own_fds.append(fd)
            output_handle = shm.SegmentHandle(shm.host_identity(), os.getpid(), fd, 0)
        shares: list = [None] * world_size
        dist.all_gather_object(shares, RankShare(input_handle, tuple(results), output_handle), group=group)

        # Every rank now derives the same outcomes, layout and split of the normalization work.
        unit_results: dict[int, tuple[int, UnitResult]] = {}
        for owner, share in enumerate(shares):
            for res in share.results:
                unit_results[res.unit] = (owner, res)
        placed, clips, total = _layout(requests, units, unit_results, refused, profile)
        out_map = None
        if total:
            out_handle = shares[0].output_handle
            assert out_handle is not None
            out_fd = shm.open_peer_fd(out_handle, writable=True)
            try:
                if os.fstat(out_fd).st_size < total:
                    os.ftruncate(out_fd, total)  # every rank sets the same size; the order does not matter
                shared_out = mmap.mmap(out_fd, total)
                _normalize_my_rows(
                    clips, rank, world_size, units, unit_results, shares, maps, shared_out, profile
                )
                del shared_out
                dist.barrier(group=group)
                out_map = mmap.mmap(out_fd, total, flags=mmap.MAP_PRIVATE)
            finally:
                os.close(out_fd)
        else:
            dist.barrier(group=group)  # peers may still be reading my input segment
    finally:
        maps.clear()
        for fd in own_fds:
            os.close(fd)
    return _outcomes(requests, placed, out_map, profile)


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


def _normalize_my_rows(
    clips, rank, world_size, units, unit_results, shares, maps, shared_out, profile
) -> None:
    """Normalize this rank's contiguous share of all block rows into the shared output."""
    total_blocks = sum(c.blocks * c.rows_per_block for c in clips)
    lo, hi = total_blocks * rank // world_size, total_blocks * (rank + 1) // world_size
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
        if owner not in maps:
            handle = shares[owner].input_handle
            fd = shm.open_peer_fd(handle)
            try:
                maps[owner] = mmap.mmap(fd, handle.nbytes, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        n, h, w, c = res.shape
        frames = np.frombuffer(maps[owner], np.uint8, n * h * w * c, res.offset).reshape(n, h, w, c)
        if not units[clip.unit].video:
            frames = np.broadcast_to(frames[0], (tp, h, w, c))
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
