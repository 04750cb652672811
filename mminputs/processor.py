"""Real materialization for a Qwen2/2.5-VL style model: decode, smart-resize to the 28-pixel grid,
normalize with the model's mean/std and lay the pixels out as flattened patches.

Split in two phases so a caller can have the float tensors written straight into memory it owns (a
shared-memory segment): `plan` decodes and resizes (uint8, cheap to hold), `finish` writes the floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .sources import InputRejected, decode_image, load_source_bytes
from .types import MaterializedInputs, MMInputError, MMLimits, MMRequest, Outcome


@dataclass(frozen=True)
class VisionProfile:
    """The model's input grid and normalization (defaults: Qwen2-VL as sglang 0.5.23 configures it)."""

    name: str = "qwen2-vl"
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_min_pixels: int = 4 * 28 * 28
    image_max_pixels: int = 16384 * 28 * 28
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    max_aspect_ratio: float = 200.0
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size


DEFAULT_PROFILE = VisionProfile()


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int, max_ratio: float):
    """Target (height, width): multiples of `factor`, aspect ratio kept, pixel count within bounds."""
    if min(height, width) <= 0:
        raise InputRejected(400, f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > max_ratio:
        raise InputRejected(400, f"image aspect ratio {width}x{height} exceeds {max_ratio:g}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / shrink / factor) * factor)
        w = max(factor, math.floor(width / shrink / factor) * factor)
    elif h * w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * grow / factor) * factor
        w = math.ceil(width * grow / factor) * factor
    return h, w


@dataclass(frozen=True)
class PlannedRequest:
    """A request decoded and resized: uint8 frames per item, and the float tensor shapes `finish` fills."""

    rid: str
    images: tuple[np.ndarray, ...]  # each (temporal_patch_size, H, W, 3) uint8 (the frame repeated)
    videos: tuple[np.ndarray, ...]  # each (T, H, W, 3) uint8, T a multiple of temporal_patch_size
    image_grid_thw: tuple[tuple[int, int, int], ...]
    video_grid_thw: tuple[tuple[int, int, int], ...]
    num_mm_tokens: int

    @property
    def image_rows(self) -> int:
        return sum(t * h * w for t, h, w in self.image_grid_thw)

    @property
    def video_rows(self) -> int:
        return sum(t * h * w for t, h, w in self.video_grid_thw)


def check_structure(request: MMRequest, limits: MMLimits) -> None:
    """Request-level checks that need no decoding; they run before any item is decoded, in item order."""
    if len(request.items) > limits.max_items:
        raise InputRejected(
            413, f"request has {len(request.items)} multimodal items; the limit is {limits.max_items}"
        )
    for index, item in enumerate(request.items):
        if item.modality == "image":
            if len(item.sources) != 1:
                problem = (400, f"an image item has exactly one source, got {len(item.sources)}")
            else:
                continue
        elif item.modality == "video":
            if not item.sources:
                problem = (400, "a video item needs at least one frame")
            elif len(item.sources) > limits.max_frames:
                problem = (413, f"video has {len(item.sources)} frames; the limit is {limits.max_frames}")
            else:
                continue
        else:
            problem = (400, f"unknown modality {item.modality!r}; expected 'image' or 'video'")
        raise InputRejected(problem[0], f"item {index}: {problem[1]}")


def plan(request: MMRequest, limits: MMLimits, profile: VisionProfile = DEFAULT_PROFILE) -> PlannedRequest:
    """Load, decode and resize every item of `request`; raises InputRejected for bad or oversized input."""
    check_structure(request, limits)
    images: list[np.ndarray] = []
    videos: list[np.ndarray] = []
    image_grids: list[tuple[int, int, int]] = []
    video_grids: list[tuple[int, int, int]] = []
    tp = profile.temporal_patch_size
    for index, item in enumerate(request.items):
        try:
            if item.modality == "image":
                frame = load_frames(list(item.sources), limits, profile, video=False)[0]
                images.append(np.broadcast_to(frame, (tp, *frame.shape)))
                image_grids.append(_grid(1, frame, profile))
            else:
                frames = load_frames(list(item.sources), limits, profile, video=True)
                # Pad to whole temporal patches by repeating the last frame, as Qwen2-VL does.
                frames += [frames[-1]] * (-len(frames) % tp)
                videos.append(np.stack(frames))
                video_grids.append(_grid(len(frames) // tp, frames[0], profile))
        except InputRejected as exc:
            raise InputRejected(exc.status, f"item {index}: {exc.message}") from None
    merge = profile.merge_size**2
    tokens = sum(t * h * w for t, h, w in image_grids + video_grids) // merge
    return PlannedRequest(
        request.rid, tuple(images), tuple(videos), tuple(image_grids), tuple(video_grids), tokens
    )


def finish(
    planned: PlannedRequest,
    profile: VisionProfile = DEFAULT_PROFILE,
    *,
    image_out: torch.Tensor | None = None,
    video_out: torch.Tensor | None = None,
) -> MaterializedInputs:
    """Normalize and patchify into `image_out`/`video_out` (float32, rows x patch_dim) or fresh tensors."""
    pixel_values = _fill(planned.images, planned.image_rows, profile, image_out)
    pixel_values_videos = _fill(planned.videos, planned.video_rows, profile, video_out)
    return MaterializedInputs(
        rid=planned.rid,
        pixel_values=pixel_values,
        image_grid_thw=planned.image_grid_thw,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=planned.video_grid_thw,
        num_mm_tokens=planned.num_mm_tokens,
    )


def materialize(request: MMRequest, limits: MMLimits, profile: VisionProfile = DEFAULT_PROFILE) -> Outcome:
    """The single-process reference: the request's inputs, or its error. Never raises for bad input."""
    try:
        return finish(plan(request, limits, profile), profile)
    except InputRejected as exc:
        return MMInputError(request.rid, exc.status, exc.message)


def resize_target(width: int, height: int, profile: VisionProfile, *, video: bool) -> tuple[int, int]:
    """(width, height) an image or video frame of this size is resized to."""
    h, w = smart_resize(
        height,
        width,
        factor=profile.factor,
        min_pixels=profile.video_min_pixels if video else profile.image_min_pixels,
        max_pixels=profile.video_max_pixels if video else profile.image_max_pixels,
        max_ratio=profile.max_aspect_ratio,
    )
    return (w, h)


def load_frames(
    sources: list[str],
    limits: MMLimits,
    profile: VisionProfile,
    *,
    video: bool,
    size: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """Decode and resize `sources` to uint8 (H, W, 3) arrays. Without `size`, the first source's size
    decides the target (every frame of a video takes the first frame's grid)."""
    frames: list[np.ndarray] = []
    for source in sources:
        img = decode_image(load_source_bytes(source, limits), limits)
        if size is None:
            size = resize_target(img.width, img.height, profile, video=video)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        frames.append(np.asarray(img, dtype=np.uint8))
    return frames


def _grid(t: int, frame: np.ndarray, profile: VisionProfile) -> tuple[int, int, int]:
    return (t, frame.shape[0] // profile.patch_size, frame.shape[1] // profile.patch_size)


def _fill(
    clips: tuple[np.ndarray, ...], rows: int, profile: VisionProfile, out: torch.Tensor | None
) -> torch.Tensor | None:
    if not clips:
        return None
    if out is None:
        out = torch.empty((rows, profile.patch_dim), dtype=torch.float32)
    elif out.shape != (rows, profile.patch_dim) or out.dtype != torch.float32:
        raise ValueError(
            f"output tensor must be float32 {(rows, profile.patch_dim)}, got {out.dtype} {tuple(out.shape)}"
        )
    dest = out.numpy()
    start = 0
    for clip in clips:
        rows = clip_rows(clip.shape, profile)
        patchify_into(clip, dest[start : start + rows], profile)
        start += rows
    return out


def clip_rows(shape: tuple[int, ...], profile: VisionProfile) -> int:
    """Patch rows of a (T, H, W, 3) clip."""
    t, h, w = shape[0], shape[1], shape[2]
    return (t // profile.temporal_patch_size) * (h // profile.patch_size) * (w // profile.patch_size)


def patchify_into(
    clip: np.ndarray,
    out: np.ndarray,
    profile: VisionProfile,
    *,
    t_range: tuple[int, int] | None = None,
    block_rows: tuple[int, int] | None = None,
) -> None:
    """Normalize clip (T, H, W, 3) uint8 into its patch rows `out` (all of the clip's rows, float32).

    Row order is (t, h-block, w-block, h-in-block, w-in-block); each row is (channel, time, y, x).
    `t_range` (temporal patches) and `block_rows` (rows of merge blocks) restrict the work to a part, so
    several processes can fill one clip; the values do not depend on how the work is split.
    """
    p, m, tp = profile.patch_size, profile.merge_size, profile.temporal_patch_size
    t, h, w, _ = clip.shape
    gt, gh, gw = t // tp, h // p, w // p
    t0, t1 = t_range or (0, gt)
    r0, r1 = block_rows or (0, gh // m)
    if r1 <= r0 or t1 <= t0:
        return
    std = np.asarray(profile.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(3, 1, 1, 1)
    bias = (-np.asarray(profile.mean, dtype=np.float32) / std).astype(np.float32).reshape(3, 1, 1, 1)
    rows_per_block_row = gw * m
    for ti in range(t0, t1):
        part = clip[ti * tp : (ti + 1) * tp, r0 * m * p : r1 * m * p]
        src = part.reshape(tp, r1 - r0, m, p, gw // m, m, p, 3).transpose(1, 4, 2, 5, 7, 0, 3, 6)
        first = ti * gh * gw + r0 * rows_per_block_row
        view = out[first : first + (r1 - r0) * rows_per_block_row].reshape(
            r1 - r0, gw // m, m, m, 3, tp, p, p
        )
        np.multiply(src, scale, out=view)
        np.add(view, bias, out=view)
