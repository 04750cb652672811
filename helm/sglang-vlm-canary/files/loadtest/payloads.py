"""Request bodies built before the run: seeded synthetic images or a JSONL dataset of prompts and images.

A synthetic image can be made unique per request without re-encoding it: each encoded image carries
a nonce slot (a JPEG COM segment or a PNG tEXt chunk) at a byte offset divisible by 3, so its
base64 text can be spliced in place. Server-side image caches key on the image bytes, so a fresh
nonce is a guaranteed miss and the base bytes a possible hit.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

IMAGE_FORMATS = ("jpeg", "png")
_MASK64 = (1 << 64) - 1


def unit_hash(seed: int, seq: int, salt: int) -> float:
    """A uniform float in [0, 1) that depends only on (seed, seq, salt): splitmix64 finalizer."""
    z = (seed * 0x9E3779B97F4A7C15 + seq * 0xBF58476D1CE4E5B9 + salt * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int
    weight: float


def parse_image_sizes(spec: str) -> tuple[ImageSize, ...]:
    """`"448x448:3,1920x1080:1"` -> sizes with relative weights (weight 1 when omitted)."""
    sizes = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        dims, _, weight = part.partition(":")
        width, x, height = dims.lower().partition("x")
        try:
            size = ImageSize(int(width), int(height), float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(
                f"bad image size {part!r}: expected WIDTHxHEIGHT[:weight], e.g. 1920x1080:1"
            ) from None
        if not x or size.width <= 0 or size.height <= 0 or size.weight <= 0:
            raise ValueError(f"bad image size {part!r}: width, height and weight must be > 0")
        sizes.append(size)
    if not sizes:
        raise ValueError("no image size given: expected e.g. 448x448 or 448x448:3,1920x1080:1")
    return tuple(sizes)


# --------------------------------------------------------------------------------- nonce images
@dataclass(frozen=True)
class NonceImage:
    """Base64 of an encoded image and the base64 span of its nonce slot (3-byte aligned)."""

    mime: str
    b64: bytes
    span: tuple[int, int]  # base64 character range to replace
    fmt: str

    def render(self, nonce: int | None) -> bytes:
        if nonce is None:
            return self.b64
        start, end = self.span
        return self.b64[:start] + base64.b64encode(_slot_bytes(self.fmt, nonce)) + self.b64[end:]


def _slot_bytes(fmt: str, nonce: int) -> bytes:
    if fmt == "jpeg":
        # COM marker, length 14 (itself + 12 data bytes), 12 nonce bytes: starts at offset 2 (after SOI),
        # the nonce itself at offset 6. The whole 18-byte segment at 0..18 is re-encoded with SOI.
        return b"\xff\xd8\xff\xfe\x00\x0e" + (nonce & ((1 << 96) - 1)).to_bytes(12, "big")
    # PNG tEXt chunk at offset 33 (after signature and IHDR): 4 len + 4 type + 15 data + 4 crc = 27 bytes.
    data = b"n\x00" + f"{nonce & ((1 << 52) - 1):013x}".encode()
    return struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))


def encode_nonce_image(image: Image.Image, fmt: str) -> NonceImage:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=85)
        raw = buffer.getvalue()
        assert raw[:2] == b"\xff\xd8", "PIL wrote a JPEG without SOI"
        with_slot = _slot_bytes("jpeg", 0) + raw[2:]
        return NonceImage("image/jpeg", base64.b64encode(with_slot), (0, 24), fmt)
    if fmt == "png":
        image.save(buffer, "PNG")
        raw = buffer.getvalue()
        assert raw[12:16] == b"IHDR", "PIL wrote a PNG whose first chunk is not IHDR"
        with_slot = raw[:33] + _slot_bytes("png", 0) + raw[33:]
        return NonceImage("image/png", base64.b64encode(with_slot), (44, 80), fmt)
    raise ValueError(f"unknown image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")


def synthetic_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields plus mild noise: compresses like a photo (a 1080p JPEG is ~0.5 MB)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16
    )
    noisy = smooth + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------- bodies
@dataclass(frozen=True)
class RequestShape:
    model: str
    max_tokens: int
    prompt: str
    extra_body: dict[str, Any]


def _body_head(shape: RequestShape) -> bytes:
    return b'{"messages":[{"role":"user","content":['


def _body_tail(shape: RequestShape, prompt: str, max_tokens: int) -> bytes:
    fields = {
        "model": shape.model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **shape.extra_body,
    }
    text_part = json.dumps({"type": "text", "text": prompt})
    return (text_part + "]}]," + json.dumps(fields)[1:]).encode()


def _image_part(mime: str, b64: bytes) -> list[bytes]:
    return [b'{"type":"image_url","image_url":{"url":"data:', mime.encode(), b";base64,", b64, b'"}},']


@dataclass(frozen=True)
class PreparedBody:
    body: bytes
    images: int


class SyntheticBodies:
    """Per-request bodies from seeded images; request `seq`'s contents depend on (seed, seq) only."""

    def __init__(
        self,
        shape: RequestShape,
        sizes: tuple[ImageSize, ...],
        fmt: str,
        images_per_request: int,
        variants: int,
        unique_share: float,
        seed: int,
    ) -> None:
        if images_per_request < 0:
            raise ValueError(f"images per request must be >= 0, got {images_per_request}")
        if variants < 1:
            raise ValueError(f"image variants must be >= 1, got {variants}")
        if not 0.0 <= unique_share <= 1.0:
            raise ValueError(f"unique image share must be within [0, 1], got {unique_share}")
        if fmt not in IMAGE_FORMATS:
            raise ValueError(f"unknown image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
        self.images_per_request = images_per_request
        self.unique_share = unique_share
        self.seed = seed
        self.variants = variants
        total = sum(s.weight for s in sizes)
        self._cumulative = np.cumsum([s.weight / total for s in sizes]).tolist()
        self._images = [
            [
                encode_nonce_image(synthetic_image(s.width, s.height, seed * 7919 + i * 131 + v), fmt)
                for v in range(variants)
            ]
            for i, s in enumerate(sizes)
            if images_per_request > 0
        ]
        self._head = _body_head(shape)
        self._tail = _body_tail(shape, shape.prompt, shape.max_tokens)

    def body(self, seq: int) -> PreparedBody:
        parts = [self._head]
        for slot in range(self.images_per_request):
            pick = unit_hash(self.seed, seq, 3 * slot)
            size_index = next(
                i for i, c in enumerate(self._cumulative) if pick < c or i == len(self._cumulative) - 1
            )
            variant = int(unit_hash(self.seed, seq, 3 * slot + 1) * self.variants)
            unique = unit_hash(self.seed, seq, 3 * slot + 2) < self.unique_share
            image = self._images[size_index][variant]
            # nonce 0 is the base image itself; unique nonces start at 1.
            parts += _image_part(image.mime, image.render(seq * 64 + slot + 1 if unique else None))
        parts.append(self._tail)
        return PreparedBody(b"".join(parts), self.images_per_request)


_MIME_BY_EXT = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


class DatasetError(ValueError):
    """A dataset file or line that cannot be used; the message names the file and line."""


class DatasetBodies:
    """One prepared body per dataset line; request `seq` uses line `seq % len`."""

    def __init__(self, path: str, shape: RequestShape) -> None:
        self._bodies: list[PreparedBody] = []
        base = os.path.dirname(os.path.abspath(path))
        try:
            handle = open(path, encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"dataset {path}: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    self._bodies.append(self._prepare(path, number, line, base, shape))
        if not self._bodies:
            raise DatasetError(f"dataset {path}: no requests in it")

    @staticmethod
    def _prepare(path: str, number: int, line: str, base: str, shape: RequestShape) -> PreparedBody:
        where = f"dataset {path} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise DatasetError(f"{where}: expected an object with a string 'prompt'")
        images = item.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise DatasetError(f"{where}: 'images' must be a list of file paths")
        max_tokens = item.get("max_tokens", shape.max_tokens)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise DatasetError(f"{where}: 'max_tokens' must be a positive integer")
        unknown = set(item) - {"prompt", "images", "max_tokens"}
        if unknown:
            raise DatasetError(f"{where}: unknown keys {sorted(unknown)}")
        parts = [_body_head(shape)]
        for image_path in images:
            full = image_path if os.path.isabs(image_path) else os.path.join(base, image_path)
            mime = _MIME_BY_EXT.get(os.path.splitext(full)[1].lower())
            if mime is None:
                raise DatasetError(f"{where}: image {image_path!r} has an unknown extension")
            try:
                with open(full, "rb") as image_file:
                    data = image_file.read()
            except OSError as exc:
                raise DatasetError(f"{where}: image {image_path!r}: {exc.strerror}") from None
            parts += _image_part(mime, base64.b64encode(data))
        parts.append(_body_tail(shape, item["prompt"], max_tokens))
        return PreparedBody(b"".join(parts), len(images))

    def body(self, seq: int) -> PreparedBody:
        return self._bodies[seq % len(self._bodies)]
