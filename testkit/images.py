"""Deterministic synthetic images and videos (data URLs) for the tests and the benchmarks."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from mminputs.types import MMItem, MMRequest


def synthetic_frame(width: int, height: int, seed: int, *, quality: int = 90) -> str:
    """A JPEG data URL of a smooth, photo-like scene (gradients, blocks, mild noise) of the given size."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    phase = rng.uniform(0, 6.28, size=3).astype(np.float32)
    channels = [
        127 + 100 * np.sin(6 * x + 3 * y + phase[c]) * np.cos(4 * y - 2 * x + phase[(c + 1) % 3])
        for c in range(3)
    ]
    img = np.stack(channels, axis=-1)
    for _ in range(6):  # a few flat blocks, so edges exist
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        img[y0 : y0 + height // 5, x0 : x0 + width // 5] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=quality)


def encode_jpeg(pixels: np.ndarray, *, quality: int = 90) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_request(rid: str, width: int, height: int, seed: int) -> MMRequest:
    return MMRequest(rid, (MMItem.image(synthetic_frame(width, height, seed)),))


def video_request(rid: str, width: int, height: int, frames: int, seed: int) -> MMRequest:
    return MMRequest(
        rid, (MMItem.video([synthetic_frame(width, height, seed * 1000 + f) for f in range(frames)]),)
    )
