import base64
import io
import json
import re

import pytest
from PIL import Image

from loadtest.payloads import (
    DatasetBodies,
    DatasetError,
    RequestShape,
    SyntheticBodies,
    encode_nonce_image,
    parse_image_sizes,
    synthetic_image,
    unit_hash,
)

SHAPE = RequestShape("m", 32, "Describe.", {"ignore_eos": True})
_URL = re.compile(r'"url":"data:(image/\w+);base64,([^"]+)"')


def images_of(body: bytes):
    doc = json.loads(body)
    parts = doc["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    return doc, [base64.b64decode(u.split(",", 1)[1]) for u in urls]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_nonce_images_decode_and_differ_only_when_made_unique(fmt):
    image = synthetic_image(64, 48, seed=1)
    encoded = encode_nonce_image(image, fmt)
    base, unique_a, unique_b = (base64.b64decode(encoded.render(n)) for n in (None, 5, 6))
    assert len({base, unique_a, unique_b}) == 3
    for raw in (base, unique_a, unique_b):
        decoded = Image.open(io.BytesIO(raw))
        decoded.load()  # PNG chunk CRCs and JPEG markers are checked here
        assert decoded.size == (64, 48)
    assert encoded.render(5) == encoded.render(5)


def test_synthetic_bodies_are_valid_chat_requests_and_depend_only_on_seed_and_seq():
    sizes = parse_image_sizes("32x32:1,64x48:1")
    make = lambda: SyntheticBodies(SHAPE, sizes, "jpeg", 2, 2, 0.5, seed=4)  # noqa: E731
    first, second = make(), make()
    for seq in range(20):
        assert first.body(seq).body == second.body(seq).body
    doc, images = images_of(first.body(3).body)
    assert doc["stream"] is True and doc["stream_options"] == {"include_usage": True}
    assert doc["max_tokens"] == 32 and doc["model"] == "m" and doc["ignore_eos"] is True
    assert doc["messages"][0]["content"][-1] == {"type": "text", "text": "Describe."}
    assert len(images) == 2 and first.body(3).images == 2
    sizes_seen = {
        Image.open(io.BytesIO(img)).size for seq in range(40) for img in images_of(first.body(seq).body)[1]
    }
    assert sizes_seen == {(32, 32), (64, 48)}


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_unique_image_share_controls_repeated_image_bytes(share):
    bodies = SyntheticBodies(SHAPE, parse_image_sizes("32x32"), "png", 1, 1, share, seed=0)
    seen = [images_of(bodies.body(seq).body)[1][0] for seq in range(400)]
    base_count = sum(1 for raw in seen if raw == seen_base(bodies))
    assert (400 - base_count) / 400 == pytest.approx(share, abs=0.07)
    assert len(set(seen)) == (400 - base_count) + (1 if base_count else 0)


def seen_base(bodies):
    return base64.b64decode(bodies._images[0][0].render(None))


def test_unit_hash_is_uniform_and_deterministic():
    values = [unit_hash(1, seq, 0) for seq in range(5000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.02)
    assert unit_hash(1, 7, 2) == unit_hash(1, 7, 2) != unit_hash(2, 7, 2)


def test_image_size_specs():
    assert [(s.width, s.height, s.weight) for s in parse_image_sizes("448x448:3, 1920x1080")] == [
        (448, 448, 3.0),
        (1920, 1080, 1.0),
    ]
    for bad in ("448", "0x10", "10x10:-1", "axb", ""):
        with pytest.raises(ValueError):
            parse_image_sizes(bad)


def test_dataset_lines_become_bodies_with_their_images(tmp_path):
    synthetic_image(20, 10, 0).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"prompt": "one", "images": ["a.png"], "max_tokens": 7})
        + "\n\n"
        + json.dumps({"prompt": "two"})
        + "\n"
    )
    bodies = DatasetBodies(str(tmp_path / "d.jsonl"), SHAPE)
    doc, images = images_of(bodies.body(0).body)
    assert doc["max_tokens"] == 7 and images == [(tmp_path / "a.png").read_bytes()]
    doc2, images2 = images_of(bodies.body(1).body)
    assert doc2["messages"][0]["content"] == [{"type": "text", "text": "two"}] and doc2["max_tokens"] == 32
    assert bodies.body(2).body == bodies.body(0).body


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", r"line 2: not JSON"),
        ('{"images": []}', r"line 2: expected an object with a string 'prompt'"),
        ('{"prompt": "x", "images": ["missing.jpg"]}', r"line 2: image 'missing.jpg': No such file"),
        ('{"prompt": "x", "images": ["a.tiff"]}', r"line 2: image 'a.tiff' has an unknown extension"),
        ('{"prompt": "x", "max_tokens": 0}', r"line 2: 'max_tokens' must be a positive integer"),
        ('{"prompt": "x", "temperature": 1}', r"line 2: unknown keys \['temperature'\]"),
    ],
)
def test_malformed_dataset_lines_are_named(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message):
        DatasetBodies(str(path), SHAPE)


def test_missing_or_empty_dataset(tmp_path):
    with pytest.raises(DatasetError, match="No such file"):
        DatasetBodies(str(tmp_path / "nope.jsonl"), SHAPE)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="no requests"):
        DatasetBodies(str(tmp_path / "e.jsonl"), SHAPE)
