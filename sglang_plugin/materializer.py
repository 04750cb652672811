"""Upstream's per-request step as an `mminputs` materializer, so the shared strategies run it in sglang.

In sglang 0.5.23 the tokenizer process decodes, resizes and normalizes images; every scheduler rank then
receives the same `MultimodalProcessorOutput` (finished feature tensors) in `recv_req.mm_inputs`, and the
step that `--enable-broadcast-mm-inputs-process` moves onto the entry rank is
`MultimodalInputs.from_processor_output` (drop invalid items, rebuild CUDA-IPC features, build the token
modality map, hash each item's feature into its pad values) followed by one pickled broadcast of the
resulting `MultimodalInputs` per request. Here that same conversion is what the strategies materialize:
the mode decides which rank runs it; the result is pickled as upstream pickles it, except its features:
those every rank already holds are bound to the receiving rank's own copy, and any the conversion
replaced travel through the shared transports (shared memory on one host, tensor broadcasts across hosts).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mminputs import Staged
from mminputs.object_tensors import join, stage_object


@dataclass(frozen=True, eq=False)
class ProcessorOutputRequest:
    """One request as the strategies see it: its rid and its `MultimodalProcessorOutput`, as received."""

    rid: str
    raw: Any


@dataclass(frozen=True)
class ProcessorOutputConversion:
    """Materializes `convert(raw, requires_mm_token_modalities=...)` (upstream's `from_processor_output`)."""

    convert: Callable[..., Any]
    requires_mm_token_modalities: bool
    name: str = "sglang_from_processor_output"

    def check(self, request: object, index: int) -> str:
        if not isinstance(request, ProcessorOutputRequest):
            raise TypeError(f"batch[{index}] is {type(request).__name__}, expected ProcessorOutputRequest")
        return request.rid

    def cost(self, request: ProcessorOutputRequest) -> int:
        # Hashing the features dominates the conversion; every rank holds the same raw input, so the same cost.
        return 1 + sum(_nbytes(item) for item in getattr(request.raw, "mm_items", None) or ())

    def materialize(self, request: ProcessorOutputRequest) -> Any:
        return self.convert(request.raw, requires_mm_token_modalities=self.requires_mm_token_modalities)

    def stage(self, request: ProcessorOutputRequest) -> Staged:
        # Every rank received the same processor output, features included (sglang broadcasts the batch to
        # the TP group), so features the conversion kept as they were travel as references into the
        # receiving rank's own copy: no bytes move for them. Features it replaced (moved through a GPU
        # buffer for hashing) take the transport. Positions, grids and the rest (small, kept for the
        # request's whole life) are pickled with the object, as upstream pickles them, and never pin a buffer.
        # Taken before converting: the conversion may replace features on the very item objects it returns.
        # `received` keeps those tensors alive until the split is done, so no id is reused meanwhile.
        received = _received_features(request.raw)
        inputs = self.materialize(request)
        features = {id(t) for item in getattr(inputs, "mm_items", None) or () for t in _feature_tensors(item)}
        own = {id(tensor): key for key, tensor in received}
        return stage_object(request.rid, inputs, lambda tensor: id(tensor) in features, own)

    def assemble(
        self, skeleton: bytes, tensors: Sequence[torch.Tensor], request: ProcessorOutputRequest
    ) -> Any:
        items = request.raw.mm_items

        def resolve(key: Hashable) -> torch.Tensor:
            assert isinstance(key, tuple) and len(key) == 3, f"not a feature reference: {key!r}"
            index, name, position = key
            value = getattr(items[index], name)
            if position is not None:
                value = value[position]
            assert isinstance(value, torch.Tensor), f"item {index} of {request.rid} has no tensor {key!r}"
            return value

        return join(skeleton, tensors, resolve)

    def sharded_exchange(self, group: Any, rank: int, world_size: int) -> None:
        return None  # whole requests per rank: the conversion has no finer unit


def features_on_cpu(raw: Any) -> bool:
    """True when every item's feature and precomputed embeddings are absent or CPU tensors (lists of them).

    Anything else (CUDA-IPC proxies of --mm-feature-transport, GPU tensors) is reconstructed on the entry
    rank's device by upstream, with consumer accounting the plugin does not take over: those requests keep
    upstream's path. Every rank received the same raw input, so every rank decides alike."""
    for item in getattr(raw, "mm_items", None) or ():
        for value in (getattr(item, "feature", None), getattr(item, "precomputed_embeddings", None)):
            values = value if isinstance(value, list | tuple) else [value]
            if not all(v is None or (isinstance(v, torch.Tensor) and v.device.type == "cpu") for v in values):
                return False
    return True


FeatureKey = tuple[int, str, int | None]  # (item index, field, position in a list field or None)


def _received_features(raw: Any) -> list[tuple[FeatureKey, torch.Tensor]]:
    """(key, tensor) of the features in this rank's copy of the processor output (plain or in lists)."""
    found: list[tuple[FeatureKey, torch.Tensor]] = []
    for index, item in enumerate(getattr(raw, "mm_items", None) or ()):
        for name in ("feature", "precomputed_embeddings"):
            value = getattr(item, name, None)
            if isinstance(value, torch.Tensor):
                found.append(((index, name, None), value))
            elif isinstance(value, list | tuple):
                found += [((index, name, k), v) for k, v in enumerate(value) if isinstance(v, torch.Tensor)]
    return found


def _feature_tensors(item: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for value in (getattr(item, "feature", None), getattr(item, "precomputed_embeddings", None)):
        values = value if isinstance(value, list | tuple) else [value]
        found += [v for v in values if isinstance(v, torch.Tensor)]
    return found


def _nbytes(item: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _feature_tensors(item))
