"""How a source rank's buffer reaches its peers: shared memory on one host, tensor collectives across hosts.

Both transports share one shape: `build` writes a share of the batch (staged by a materializer) into a
buffer the transport owns; the share's small descriptor travels by an object collective (the caller's);
`exchange` then gives every rank the (rid, outcome) pairs of every share, in the order of the descriptors.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from . import shm
from .materializer import Materializer, Staged, TensorSpec
from .packing import Keyed, Record, View, fill, flat_view, layout, unpack
from .types import MMInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareDescriptor:
    """Pickled to peers: the records of one source's share, its buffer size, and (shared memory) its handle."""

    records: tuple[Record, ...]
    nbytes: int
    handle: shm.SegmentHandle | None = None


@dataclass
class LocalShare:
    """The source side of a share: outcomes over the buffer, and what must be released after the exchange."""

    descriptor: ShareDescriptor
    outcomes: list[Keyed]
    flat: torch.Tensor | None = None
    segment: shm.OwnedSegment | None = field(default=None, repr=False)

    def release(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment = None


def _no_view(offset: int, spec: TensorSpec) -> torch.Tensor:
    if spec.nbytes:
        raise AssertionError("a share without a buffer has no tensor bytes")
    return torch.empty(spec.shape, dtype=spec.dtype)


def _mapping_view(mapping: mmap.mmap) -> View:
    def view(offset: int, spec: TensorSpec) -> torch.Tensor:
        return shm.tensor_view(mapping, offset, spec.shape, spec.dtype)

    return view


def _writable_view(segment: shm.OwnedSegment) -> View:
    def view(offset: int, spec: TensorSpec) -> torch.Tensor:
        return segment.writable(offset, spec.shape, spec.dtype)

    return view


class ShmTransport:
    """Zero-copy on one host: only segment handles are pickled; tensors are views of peers' segments."""

    name = "shm"

    def build(
        self, staged: Sequence[Staged | MMInputError], materializer: Materializer, requests: Mapping[str, Any]
    ) -> LocalShare:
        records, nbytes = layout(staged)
        if nbytes == 0:
            return LocalShare(
                ShareDescriptor(tuple(records), 0), unpack(records, _no_view, materializer, requests)
            )
        segment = shm.OwnedSegment(nbytes)
        try:
            fill(staged, records, _writable_view(segment))
            private = segment.seal()
        except BaseException:
            segment.close()
            raise
        outcomes = unpack(records, _mapping_view(private), materializer, requests)
        return LocalShare(ShareDescriptor(tuple(records), nbytes, segment.handle), outcomes, segment=segment)

    def exchange(
        self,
        descriptors: Sequence[ShareDescriptor],
        source_ranks: Sequence[int],
        local: LocalShare | None,
        group,
        materializer: Materializer,
        requests: Mapping[str, Any],
    ) -> list[list[Keyed]]:
        me = dist.get_rank()
        results: list[list[Keyed]] = []
        try:
            for desc, src in zip(descriptors, source_ranks, strict=True):
                if src == me:
                    assert local is not None
                    results.append(local.outcomes)
                elif desc.nbytes == 0:
                    results.append(unpack(desc.records, _no_view, materializer, requests))
                else:
                    assert desc.handle is not None
                    mapping = shm.map_peer_segment(desc.handle)
                    results.append(unpack(desc.records, _mapping_view(mapping), materializer, requests))
        finally:
            # Every rank has mapped what it needs once all pass this barrier; then creators drop their fds
            # and the segments live on only in the mappings (freed with the last tensor over them).
            dist.barrier(group=group)
            if local is not None:
                local.release()
        return results


class TensorTransport:
    """Across hosts: each share's buffer travels as one byte-tensor broadcast (no pickling of tensors)."""

    name = "tensor"

    def build(
        self, staged: Sequence[Staged | MMInputError], materializer: Materializer, requests: Mapping[str, Any]
    ) -> LocalShare:
        records, nbytes = layout(staged)
        flat = torch.empty(nbytes, dtype=torch.uint8)
        fill(staged, records, flat_view(flat))
        return LocalShare(
            ShareDescriptor(tuple(records), nbytes),
            unpack(records, flat_view(flat), materializer, requests),
            flat=flat,
        )

    def exchange(
        self,
        descriptors: Sequence[ShareDescriptor],
        source_ranks: Sequence[int],
        local: LocalShare | None,
        group,
        materializer: Materializer,
        requests: Mapping[str, Any],
    ) -> list[list[Keyed]]:
        me = dist.get_rank()
        results: list[list[Keyed]] = []
        for desc, src in zip(descriptors, source_ranks, strict=True):
            if src == me:
                assert local is not None and local.flat is not None
                if desc.nbytes:
                    dist.broadcast(local.flat, src=src, group=group)
                results.append(local.outcomes)
            elif desc.nbytes == 0:
                results.append(unpack(desc.records, _no_view, materializer, requests))
            else:
                buf = torch.empty(desc.nbytes, dtype=torch.uint8)
                dist.broadcast(buf, src=src, group=group)
                results.append(unpack(desc.records, flat_view(buf), materializer, requests))
        return results


Transport = ShmTransport | TensorTransport


def shm_usable(group, world_size: int) -> bool:
    """Collective: True on every rank when every rank can map every other rank's segments.

    Each rank writes a random token into a small segment; peers must read back exactly that token, so
    ranks on other hosts (where the same pid may name another process) are detected, not trusted.
    """
    token = shm.probe_token()
    segment: shm.OwnedSegment | None = None
    offer = None
    if shm.memfd_supported():
        try:
            segment = shm.OwnedSegment(shm.ALIGN, name="mminputs-probe")
            segment.writable(0, (4,)).copy_(torch.frombuffer(bytearray(token), dtype=torch.float32))
            offer = (segment.handle, token)
        except OSError as exc:
            log.info("shared-memory segments unavailable: %s", exc)
    offers: list = [None] * world_size
    try:
        dist.all_gather_object(offers, offer, group=group)
        ok = True
        for peer in offers:
            if peer is None:
                ok = False
                break
            handle, expected = peer
            try:
                mapping = shm.map_peer_segment(handle)
                ok = ok and bytes(mapping[: len(expected)]) == expected
                mapping.close()
            except (OSError, RuntimeError, ValueError):
                ok = False
        verdicts: list = [None] * world_size
        dist.all_gather_object(verdicts, ok, group=group)  # also the barrier before the probes close
    finally:
        if segment is not None:
            segment.close()
    return all(verdicts)
