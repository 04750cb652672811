"""A share of a batch laid out in one buffer, and described by small picklable records.

A rank stages its requests (see materializer.py), lays every tensor of every result out in one buffer (a
shared-memory segment, or a flat byte tensor for tensor-native collectives), and has each result's tensors
written straight into it. Peers receive only `Packed` records and the buffer's handle or bytes, then
rebuild the results as views of the buffer with the materializer's `assemble`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .materializer import Materializer, Staged, TensorSpec
from .shm import aligned
from .types import MMInputError

Span = tuple[int, TensorSpec]  # (byte offset in the buffer, the tensor there)
View = Callable[[int, TensorSpec], torch.Tensor]
Keyed = tuple[str, object]  # (rid, result or MMInputError)


@dataclass(frozen=True)
class Packed:
    """A staged request without its tensors: its skeleton, and where in the buffer its tensors lie."""

    rid: str
    skeleton: object
    spans: tuple[Span, ...]


Record = Packed | MMInputError


def layout(staged: Sequence[Staged | MMInputError]) -> tuple[list[Record], int]:
    """Records for `staged` with aligned byte spans, and the buffer size they need."""
    records: list[Record] = []
    offset = 0
    for item in staged:
        if isinstance(item, MMInputError):
            records.append(item)
            continue
        spans: list[Span] = []
        for spec in item.specs:
            spans.append((offset, spec))
            offset += aligned(spec.nbytes)
        records.append(Packed(item.rid, item.skeleton, tuple(spans)))
    return records, offset


def fill(staged: Sequence[Staged | MMInputError], records: Sequence[Record], view: View) -> None:
    """Have every staged request write its tensors into the buffer at its record's spans."""
    for item, record in zip(staged, records, strict=True):
        if isinstance(item, MMInputError):
            continue
        assert isinstance(record, Packed)
        item.write([view(offset, spec) for offset, spec in record.spans])


def unpack(
    records: Sequence[Record], view: View, materializer: Materializer, requests: Mapping[str, Any]
) -> list[Keyed]:
    """(rid, outcome) per record; results' tensors are views of the buffer `view` slices; `requests` is this
    rank's copy of the batch by rid."""
    out: list[Keyed] = []
    for record in records:
        if isinstance(record, MMInputError):
            out.append((record.rid, record))
            continue
        tensors = [view(offset, spec) for offset, spec in record.spans]
        out.append((record.rid, materializer.assemble(record.skeleton, tensors, requests[record.rid])))
    return out


def flat_view(flat: torch.Tensor) -> View:
    """Typed tensors over a flat uint8 tensor addressed by byte offset (the tensor-native transport's buffer).

    Each gets a storage of its own over the same memory (no copy): pickling one result later then carries
    only its own bytes, not the whole buffer, and views of different dtypes never share a storage."""
    array = flat.numpy()  # shares the tensor's memory and keeps it alive

    def view(offset: int, spec: TensorSpec) -> torch.Tensor:
        if spec.nbytes == 0:
            return torch.empty(spec.shape, dtype=spec.dtype)
        return torch.frombuffer(array[offset : offset + spec.nbytes], dtype=spec.dtype).view(spec.shape)

    return view


__all__ = ["Keyed", "Packed", "Record", "Span", "View", "fill", "flat_view", "layout", "unpack"]
