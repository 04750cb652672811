"""Harness: the multimodal values the scheduler receives and builds, with our own minimal version of
upstream's per-request conversion (`MultimodalInputs.from_processor_output`): drop invalid items, build
the token modality map (validating offsets), give each item a hash of its feature and a pad value derived
from it, and carry the processor output's positions and token ids over."""

import hashlib
from dataclasses import dataclass, field
from enum import Enum

import torch

PAD_BASE = 1 << 30


class Modality(Enum):
    IMAGE = 1
    VIDEO = 2
    AUDIO = 3


@dataclass
class MultimodalDataItem:
    modality: Modality
    hash: int | None = None
    pad_value: int | None = None
    offsets: list | None = None
    feature: object = None
    precomputed_embeddings: object = None
    model_specific_data: dict = field(default_factory=dict)

    def is_valid(self):
        return isinstance(self.modality, Modality)

    def set_pad_value(self):
        if self.pad_value is not None:
            return
        if self.hash is None:
            self.hash = _feature_hash(
                self.feature if self.feature is not None else self.precomputed_embeddings
            )
        self.pad_value = PAD_BASE + self.hash % PAD_BASE


@dataclass
class MultimodalProcessorOutput:
    mm_items: list
    input_ids: list | None = None
    padded_input_ids: list | None = None
    im_token_id: int | None = None
    video_token_id: int | None = None
    mrope_positions: torch.Tensor | None = None
    mrope_position_delta: torch.Tensor | None = None


@dataclass
class MultimodalInputs:
    mm_items: list
    padded_input_ids: list | None = None
    token_modalities: list | None = None
    im_token_id: int | None = None
    video_token_id: int | None = None
    mrope_positions: torch.Tensor | None = None
    mrope_position_delta: torch.Tensor | None = None

    @staticmethod
    def from_processor_output(obj, *, requires_mm_token_modalities=False):
        items = [item for item in obj.mm_items if item.is_valid()]
        token_modalities = _token_modalities(obj.input_ids, items) if requires_mm_token_modalities else None
        for item in items:
            item.set_pad_value()
        inputs = MultimodalInputs(
            mm_items=items, padded_input_ids=obj.padded_input_ids, token_modalities=token_modalities
        )
        for name in ("im_token_id", "video_token_id", "mrope_positions", "mrope_position_delta"):
            value = getattr(obj, name)
            if value is not None:
                setattr(inputs, name, value)
        return inputs


def _feature_hash(value):
    if isinstance(value, torch.Tensor):
        value = value.contiguous().view(torch.uint8).numpy()
    return int.from_bytes(hashlib.sha256(value).digest()[:8], "big")  # TypeError for a missing feature


def _token_modalities(input_ids, items):
    modalities = [0] * len(input_ids or ())
    for item in items:
        for start, end in item.offsets or ():
            if start < 0 or end < start or end >= len(modalities):
                raise ValueError(
                    f"Invalid multimodal token offsets: ({start}, {end}), {len(modalities)} tokens"
                )
            modalities[start : end + 1] = [item.modality.value] * (end - start + 1)
    return modalities
