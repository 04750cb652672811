"""Values that cross the mminputs API: raw requests in, materialized inputs or per-request errors out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Modality = Literal["image", "video"]


@dataclass(frozen=True)
class MMItem:
    """One multimodal item of a request.

    An image is one source; a video is an ordered tuple of frame sources (at least one). A source is a
    data URL (`data:image/png;base64,...`), a bare base64 string, or a local file path (`file://` or plain).
    """

    modality: Modality
    sources: tuple[str, ...]

    @staticmethod
    def image(source: str) -> MMItem:
        return MMItem("image", (source,))

    @staticmethod
    def video(frames: tuple[str, ...] | list[str]) -> MMItem:
        return MMItem("video", tuple(frames))


@dataclass(frozen=True)
class MMRequest:
    """A raw request as every TP rank holds it after receiving the batch: its id and its items, in order."""

    rid: str
    items: tuple[MMItem, ...]


@dataclass(frozen=True, eq=False)
class MaterializedInputs:
    """What the model needs for one request, Qwen2-VL layout.

    `pixel_values` holds every image's patches concatenated, one row per 14x14 patch pair
    (channels x temporal patch x 14 x 14 = 1176 floats); `image_grid_thw` is each image's (t, h, w) patch
    grid. Videos likewise. `num_mm_tokens` counts the placeholder tokens after the 2x2 spatial merge.
    Tensors compare with `same_as` (bitwise), not `==`.
    """

    rid: str
    pixel_values: torch.Tensor | None
    image_grid_thw: tuple[tuple[int, int, int], ...]
    pixel_values_videos: torch.Tensor | None
    video_grid_thw: tuple[tuple[int, int, int], ...]
    num_mm_tokens: int

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (self.pixel_values, self.pixel_values_videos)

    def same_as(self, other: object) -> bool:
        """True when `other` holds the same ids, grids, token count and bitwise-equal tensors."""
        if not isinstance(other, MaterializedInputs):
            return False
        if (self.rid, self.image_grid_thw, self.video_grid_thw, self.num_mm_tokens) != (
            other.rid,
            other.image_grid_thw,
            other.video_grid_thw,
            other.num_mm_tokens,
        ):
            return False
        return all(_bitwise_equal(a, b) for a, b in zip(self.tensors(), other.tensors(), strict=True))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors() if t is not None)


@dataclass(frozen=True)
class MMInputError:
    """A request whose inputs could not be materialized. Every rank gets the same error for it.

    `status` is HTTP-style: 400 for undecodable or malformed input, 413 for input over the limits.
    """

    rid: str
    status: int
    message: str


Outcome = MaterializedInputs | MMInputError


@dataclass(frozen=True)
class MMLimits:
    """Per-request input limits; input beyond them is a 413, never a crash or a hang."""

    max_items: int = 16
    max_frames: int = 64
    max_source_bytes: int = 32 * 1024 * 1024  # decoded bytes of one image or frame file
    max_decoded_pixels: int = 64 * 1024 * 1024  # width x height of one decoded image, before resizing
    allow_local_files: bool = True


def _bitwise_equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # Compare bytes, so NaN payloads and -0.0 count as different exactly when their bits differ.
    return bool(torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)))
