"""Materializing a share of a batch into one buffer, and describing it with small picklable records.

A source rank plans (decode + resize) its requests, lays every float tensor out in one buffer (a shared
memory segment, or a flat tensor for tensor-native collectives), and normalizes straight into it. Peers
receive only `Packed` records and the buffer's handle or bytes, then rebuild the outcomes as views.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .processor import PlannedRequest, VisionProfile, finish, plan
from .shm import aligned
from .sources import InputRejected
from .types import MaterializedInputs, MMInputError, MMLimits, MMRequest, Outcome

log = logging.getLogger(__name__)

Span = tuple[int, int]  # (byte offset, rows)


@dataclass(frozen=True)
class Packed:
    """A materialized request without its tensors: where in the buffer they lie."""

    rid: str
    image_grid_thw: tuple[tuple[int, int, int], ...]
    video_grid_thw: tuple[tuple[int, int, int], ...]
    num_mm_tokens: int
    image_span: Span | None
    video_span: Span | None


Record = Packed | MMInputError


def plan_safely(
    request: MMRequest, limits: MMLimits, profile: VisionProfile
) -> PlannedRequest | MMInputError:
    """Plan one request; bad input and unexpected failures both become that request's error, never a raise,
    so the source rank always reaches the collective that tells its peers (the upstream error envelope)."""
    try:
        return plan(request, limits, profile)
    except InputRejected as exc:
        return MMInputError(request.rid, exc.status, exc.message)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure aborts this request only, on every rank
        log.exception("materializing request %s failed", request.rid)
        return MMInputError(
            request.rid, 500, f"multimodal input processing failed: {type(exc).__name__}: {exc}"
        )


def layout(
    planned: Sequence[PlannedRequest | MMInputError], profile: VisionProfile
) -> tuple[list[Record], int]:
    """Records for `planned` with aligned byte spans, and the buffer size they need."""
    records: list[Record] = []
    offset = 0
    row_bytes = profile.patch_dim * 4
    for item in planned:
        if isinstance(item, MMInputError):
            records.append(item)
            continue
        spans: list[Span | None] = []
        for rows in (item.image_rows, item.video_rows):
            if rows:
                spans.append((offset, rows))
                offset += aligned(rows * row_bytes)
            else:
                spans.append(None)
        records.append(Packed(item.rid, item.image_grid_thw, item.video_grid_thw, item.num_mm_tokens, *spans))
    return records, offset


def fill(
    planned: Sequence[PlannedRequest | MMInputError],
    records: Sequence[Record],
    view: Callable[[int, tuple[int, int]], torch.Tensor],
    profile: VisionProfile,
) -> None:
    """Normalize every planned request into the buffer at its record's spans."""
    for item, record in zip(planned, records, strict=True):
        if isinstance(item, MMInputError):
            continue
        assert isinstance(record, Packed)
        finish(
            item,
            profile,
            image_out=_span(view, record.image_span, profile),
            video_out=_span(view, record.video_span, profile),
        )


def unpack(
    records: Sequence[Record], view: Callable[[int, tuple[int, int]], torch.Tensor], profile: VisionProfile
) -> list[Outcome]:
    """Outcomes whose tensors are views of the buffer `view` slices."""
    out: list[Outcome] = []
    for record in records:
        if isinstance(record, MMInputError):
            out.append(record)
            continue
        out.append(
            MaterializedInputs(
                rid=record.rid,
                pixel_values=_span(view, record.image_span, profile),
                image_grid_thw=record.image_grid_thw,
                pixel_values_videos=_span(view, record.video_span, profile),
                video_grid_thw=record.video_grid_thw,
                num_mm_tokens=record.num_mm_tokens,
            )
        )
    return out


def flat_view(flat: torch.Tensor) -> Callable[[int, tuple[int, int]], torch.Tensor]:
    """Slices of a flat float32 tensor addressed by byte offset (the tensor-native transport's buffer)."""

    def view(offset: int, shape: tuple[int, int]) -> torch.Tensor:
        start = offset // 4
        return flat[start : start + shape[0] * shape[1]].view(shape)

    return view


def _span(view, span: Span | None, profile: VisionProfile) -> torch.Tensor | None:
    if span is None:
        return None
    offset, rows = span
    return view(offset, (rows, profile.patch_dim))


__all__ = ["Packed", "Record", "fill", "flat_view", "layout", "plan_safely", "unpack"]
