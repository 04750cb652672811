"""Deterministic synthetic images and videos (data URLs) for the tests and the benchmarks.

One generator: the load generator's (`loadtest.payloads.synthetic_image`), which the product needs for its
seeded requests; this module only encodes its images as data URLs and wraps them in requests.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from loadtest.payloads import synthetic_image
from mminputs.types import MMItem, MMRequest


def synthetic_frame(width: int, height: int, seed: int, *, quality: int = 90) -> str:
    """A JPEG data URL of the load generator's seeded synthetic image (`loadtest.payloads.synthetic_image`:
    smooth colour fields plus mild noise, compressing like a photo) of the given size."""
    return encode_jpeg(np.asarray(synthetic_image(width, height, seed)), quality=quality)


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
