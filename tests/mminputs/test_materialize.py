"""Materialization in one process: grid, layout, normalization and the 4xx errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mminputs import (
    DEFAULT_PROFILE,
    MaterializedInputs,
    MMInputError,
    MMItem,
    MMLimits,
    MMRequest,
    materialize,
)
from mminputs.processor import smart_resize
from testkit.images import encode_jpeg, synthetic_frame

LIMITS = MMLimits()


def _png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("h", "w"), [(480, 640), (1080, 1920), (720, 1280), (10, 10), (28, 5000), (4000, 3000)]
)
def test_smart_resize_keeps_grid_bounds_and_aspect(h, w):
    p = DEFAULT_PROFILE
    rh, rw = smart_resize(
        h, w, factor=28, min_pixels=p.image_min_pixels, max_pixels=p.image_max_pixels, max_ratio=200
    )
    assert rh % 28 == 0 and rw % 28 == 0
    assert p.image_min_pixels <= rh * rw <= p.image_max_pixels
    assert abs(rh / rw - h / w) / (h / w) < 0.25 or min(h, w) < 56


def test_smart_resize_refuses_extreme_aspect_ratio():
    from mminputs.sources import InputRejected

    with pytest.raises(InputRejected) as err:
        smart_resize(10, 3000, factor=28, min_pixels=3136, max_pixels=10**7, max_ratio=200)
    assert err.value.status == 400


def test_image_layout_and_normalization_match_a_direct_computation():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8)  # already on the 28 grid: no resize
    out = materialize(MMRequest("a", (MMItem.image(_png(pixels)),)), LIMITS)
    assert isinstance(out, MaterializedInputs)
    assert out.image_grid_thw == ((1, 4, 6),)
    assert out.pixel_values is not None and out.pixel_values.shape == (24, 1176)
    assert out.pixel_values.dtype == torch.float32
    assert out.num_mm_tokens == 6 and out.pixel_values_videos is None
    mean = np.asarray(DEFAULT_PROFILE.mean, dtype=np.float32)
    std = np.asarray(DEFAULT_PROFILE.std, dtype=np.float32)
    # Row 0 is the top-left merge block's top-left 14x14 patch; columns (channel, time, y, x).
    row = out.pixel_values[0].numpy().reshape(3, 2, 14, 14)
    expect = (pixels[:14, :14].astype(np.float32) / 255.0 - mean) / std
    np.testing.assert_allclose(row[:, 0], expect.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(row[:, 0], row[:, 1])  # an image fills both temporal slots
    # Row 1 is the patch to its right (same merge block), row 2 the one below.
    row1 = out.pixel_values[1].numpy().reshape(3, 2, 14, 14)[:, 0]
    row2 = out.pixel_values[2].numpy().reshape(3, 2, 14, 14)[:, 0]
    np.testing.assert_allclose(
        row1, ((pixels[:14, 14:28] / 255.0 - mean) / std).transpose(2, 0, 1), atol=1e-5
    )
    np.testing.assert_allclose(
        row2, ((pixels[14:28, :14] / 255.0 - mean) / std).transpose(2, 0, 1), atol=1e-5
    )


def test_video_frames_pad_to_whole_temporal_patches():
    frames = [synthetic_frame(128, 96, k) for k in range(5)]
    out = materialize(MMRequest("v", (MMItem.video(frames),)), LIMITS)
    assert isinstance(out, MaterializedInputs)
    ((t, h, w),) = out.video_grid_thw
    assert t == 3  # 5 frames -> 6 with the last repeated
    assert out.pixel_values_videos is not None and out.pixel_values_videos.shape == (t * h * w, 1176)
    assert out.num_mm_tokens == t * h * w // 4
    last = out.pixel_values_videos[(t - 1) * h * w].numpy().reshape(3, 2, 14, 14)
    np.testing.assert_array_equal(last[:, 0], last[:, 1])


def test_video_pixels_stay_within_the_video_bounds():
    out = materialize(MMRequest("v", (MMItem.video([synthetic_frame(1280, 720, 1)] * 2),)), LIMITS)
    assert isinstance(out, MaterializedInputs)
    ((_, h, w),) = out.video_grid_thw
    assert h * w * 14 * 14 <= DEFAULT_PROFILE.video_max_pixels


def test_materialization_is_deterministic_bitwise():
    request = MMRequest(
        "x", (MMItem.image(synthetic_frame(333, 222, 9)), MMItem.video([synthetic_frame(64, 64, 1)] * 3))
    )
    a, b = materialize(request, LIMITS), materialize(request, LIMITS)
    assert isinstance(a, MaterializedInputs) and a.same_as(b)
    assert a.nbytes == (a.pixel_values.numel() + a.pixel_values_videos.numel()) * 4  # type: ignore[union-attr]


def test_local_file_and_file_url(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(base64.b64decode(_png(np.full((30, 40, 3), 7, np.uint8)).split(",", 1)[1]))
    a = materialize(MMRequest("a", (MMItem.image(str(path)),)), LIMITS)
    b = materialize(MMRequest("a", (MMItem.image(f"file://{path}"),)), LIMITS)
    assert isinstance(a, MaterializedInputs) and a.same_as(b)
    off = materialize(MMRequest("a", (MMItem.image(str(path)),)), MMLimits(allow_local_files=False))
    assert isinstance(off, MMInputError) and off.status == 400


@pytest.mark.parametrize(
    ("item", "limits", "status", "fragment"),
    [
        (MMItem.image("data:image/png;base64,@@@"), LIMITS, 400, "base64"),
        (MMItem.image("data:image/png,rawdata"), LIMITS, 400, "data URL"),
        (MMItem.image("data:image/png;base64,aGVsbG8gd29ybGQ="), LIMITS, 400, "unknown image format"),
        (MMItem.image("http://example.invalid/a.png"), LIMITS, 400, "remote"),
        (MMItem.image("/nonexistent/a.png"), LIMITS, 400, "base64"),
        (MMItem.image("file:///nonexistent/a.png"), LIMITS, 400, "cannot read"),
        (MMItem.image(synthetic_frame(64, 64, 1)[:-300]), LIMITS, 400, "undecodable"),
        (MMItem.image(synthetic_frame(256, 256, 1)), MMLimits(max_source_bytes=2000), 413, "exceeds"),
        (MMItem.image(synthetic_frame(64, 64, 1)), MMLimits(max_decoded_pixels=1000), 413, "pixels"),
        (MMItem.video([synthetic_frame(32, 32, 1)] * 3), MMLimits(max_frames=2), 413, "frames"),
        (MMItem.video([]), LIMITS, 400, "at least one frame"),
        (MMItem("image", ("a", "b")), LIMITS, 400, "exactly one source"),
        (MMItem("audio", ("a",)), LIMITS, 400, "unknown modality"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_a_request_error_with_status(item, limits, status, fragment):
    out = materialize(MMRequest("bad", (MMItem.image(synthetic_frame(8, 8, 2)), item)), limits)
    assert isinstance(out, MMInputError), out
    assert out.rid == "bad" and out.status == status
    assert fragment in out.message and out.message.startswith("item 1:"), out.message


def test_too_many_items_is_413():
    out = materialize(
        MMRequest("m", tuple(MMItem.image(synthetic_frame(8, 8, 1)) for _ in range(3))), MMLimits(max_items=2)
    )
    assert isinstance(out, MMInputError) and out.status == 413


def test_structure_errors_come_before_decoding():
    # Item 0 is undecodable, item 1 has too many frames: the structural 413 wins, in every mode alike.
    request = MMRequest("s", (MMItem.image("data:image/png;base64,AAAA"), MMItem.video(["x"] * 9)))
    out = materialize(request, MMLimits(max_frames=4))
    assert isinstance(out, MMInputError) and out.status == 413 and out.message.startswith("item 1:")


def test_same_as_is_bitwise():
    a = materialize(MMRequest("a", (MMItem.image(encode_jpeg(np.zeros((30, 30, 3), np.uint8))),)), LIMITS)
    assert isinstance(a, MaterializedInputs) and a.pixel_values is not None
    b = MaterializedInputs(a.rid, a.pixel_values.clone(), a.image_grid_thw, None, (), a.num_mm_tokens)
    assert a.same_as(b)
    b.pixel_values[0, 0] = -b.pixel_values[0, 0] if b.pixel_values[0, 0] != 0 else 1.0  # type: ignore[index]
    assert not a.same_as(b)
    assert not a.same_as(
        MaterializedInputs("other", a.pixel_values, a.image_grid_thw, None, (), a.num_mm_tokens)
    )
