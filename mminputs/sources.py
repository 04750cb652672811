"""Turning a request's source strings into decoded RGB images, with the limits that make bad input a 4xx."""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings

from PIL import Image, UnidentifiedImageError

from .types import MMLimits

# Longest string still tried as a file path; longer ones can only be base64 payloads.
_MAX_PATH_CHARS = 4096


class InputRejected(Exception):
    """Input that cannot be materialized; `status` is the HTTP-style code the request fails with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def load_source_bytes(source: str, limits: MMLimits) -> bytes:
    """The encoded image bytes a source names: a base64 data URL, bare base64, or a local file."""
    if not isinstance(source, str) or not source:
        raise InputRejected(400, f"image source must be a non-empty string, got {type(source).__name__}")
    if source.startswith("data:"):
        header, sep, payload = source.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InputRejected(400, "data URL must have the form data:<mime>;base64,<payload>")
        return _decode_base64(payload, limits)
    if source.startswith(("http://", "https://")):
        raise InputRejected(400, "remote image URLs are not fetched; send a data URL or a local path")
    if source.startswith("file://"):
        return _read_file(source[len("file://") :], limits)
    if len(source) <= _MAX_PATH_CHARS and os.path.isfile(source):
        return _read_file(source, limits)
    return _decode_base64(source, limits)


def decode_image(data: bytes, limits: MMLimits) -> Image.Image:
    """Decode encoded bytes into an RGB image, refusing pixel counts over the limit before decoding them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            pixels = img.width * img.height
            if pixels > limits.max_decoded_pixels:
                raise InputRejected(
                    413,
                    f"image of {img.width}x{img.height} pixels exceeds {limits.max_decoded_pixels} pixels",
                )
            img.load()
    except InputRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(413, f"image too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _undecodable(exc) from None
    return img if img.mode == "RGB" else img.convert("RGB")


def image_size(data: bytes, limits: MMLimits) -> tuple[int, int]:
    """(width, height) from the image header alone, with the same limit checks as `decode_image`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRejected(413, f"image too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _undecodable(exc) from None
    if img.width * img.height > limits.max_decoded_pixels:
        raise InputRejected(
            413, f"image of {img.width}x{img.height} pixels exceeds {limits.max_decoded_pixels} pixels"
        )
    return img.size


def _undecodable(exc: Exception) -> InputRejected:
    # PIL's message for an unknown format names a buffer's address; the error must read the same on every rank.
    detail = (
        "unknown image format" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"
    )
    return InputRejected(400, f"undecodable image: {detail}")


def _decode_base64(payload: str, limits: MMLimits) -> bytes:
    # Refuse by the payload's length before spending memory on decoding it.
    if len(payload) // 4 * 3 > limits.max_source_bytes:
        raise InputRejected(413, f"encoded image exceeds {limits.max_source_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputRejected(400, f"invalid base64 image payload: {exc}") from None
    if not data:
        raise InputRejected(400, "empty image payload")
    return data


def _read_file(path: str, limits: MMLimits) -> bytes:
    if not limits.allow_local_files:
        raise InputRejected(400, "local image paths are disabled on this server")
    try:
        size = os.stat(path).st_size
        if size > limits.max_source_bytes:
            raise InputRejected(413, f"image file {path!r} exceeds {limits.max_source_bytes} bytes")
        with open(path, "rb") as fh:
            return fh.read()
    except InputRejected:
        raise
    except OSError as exc:
        raise InputRejected(400, f"cannot read image file {path!r}: {exc.strerror or exc}") from None
