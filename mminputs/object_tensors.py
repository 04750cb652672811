"""Any picklable result as a small skeleton plus its CPU tensors, so the tensors can take a transport.

`split` pickles the object with every plain, dense CPU tensor that `travels` selects replaced by a slot
number; `join` unpickles it with each slot bound to a tensor the caller provides (views of a shared-memory
segment or of a flat broadcast buffer). Everything else (other objects, unselected tensors, GPU tensors,
numpy arrays, tensor subclasses) is pickled as `broadcast_object_list` would pickle it. Select the large,
short-lived tensors: a transport's buffer lives until the last tensor over it is gone, so a small tensor
kept for a request's whole life would pin its batch's buffer. Tensors every rank already holds (in its
own copy of the request) need not travel at all: `local` names them by a key, and `join`'s `resolve`
returns the receiving rank's tensor for that key. A tensor referenced twice gets one slot, so identity
within the object survives; tensors arrive contiguous (strides are not kept) and tensors that were views
of one storage arrive as separate tensors.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch

from .materializer import Staged, TensorSpec

_SLOT = "mminputs-tensor-slot"
_LOCAL = "mminputs-local-tensor"


Travels = Callable[[torch.Tensor], bool]


def split(
    obj: object, travels: Travels | None = None, local: Mapping[int, Hashable] | None = None
) -> tuple[bytes, list[torch.Tensor]]:
    """The object pickled without its (selected) tensors, and those tensors in slot order. `local` maps
    `id(tensor)` to a key for tensors every rank holds already: they are pickled as that key only."""
    tensors: list[torch.Tensor] = []
    slots: dict[int, int] = {}

    class _Pickler(pickle.Pickler):
        def persistent_id(self, value: object):
            if local and isinstance(value, torch.Tensor) and id(value) in local:
                return (_LOCAL, local[id(value)])
            if not _transportable(value):
                return None
            assert isinstance(value, torch.Tensor)
            if travels is not None and not travels(value):
                return None
            slot = slots.get(id(value))
            if slot is None:
                slot = slots[id(value)] = len(tensors)
                tensors.append(value)
            return (_SLOT, slot)

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue(), tensors


def join(
    skeleton: bytes,
    tensors: Sequence[torch.Tensor],
    resolve: Callable[[Hashable], torch.Tensor] | None = None,
) -> object:
    """The object `split` took apart, with its tensors taken from `tensors` (by slot) and `resolve` (by key)."""

    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            tag, ref = pid
            if tag == _LOCAL and resolve is not None:
                return resolve(ref)
            if tag != _SLOT or not 0 <= ref < len(tensors):
                raise pickle.UnpicklingError(f"unknown tensor slot {pid!r}")
            return tensors[ref]

    return _Unpickler(io.BytesIO(skeleton)).load()


def stage_object(
    rid: str, obj: object, travels: Travels | None = None, local: Mapping[int, Hashable] | None = None
) -> Staged:
    """A materialized object staged for a transport: its tensors are copied into the transport's views."""
    skeleton, tensors = split(obj, travels, local)
    specs = tuple(TensorSpec(t.dtype, tuple(t.shape)) for t in tensors)

    def write(views: Sequence[torch.Tensor]) -> None:
        for view, tensor in zip(views, tensors, strict=True):
            view.copy_(tensor)

    return Staged(rid, skeleton, specs, write)


def _transportable(value: object) -> bool:
    return (
        type(value) is torch.Tensor
        and value.device.type == "cpu"
        and value.layout == torch.strided
        and not value.is_quantized
        and not value.requires_grad
    )
