"""Parsing of chat and /generate bodies, token counting and deterministic generation (no servers)."""

from __future__ import annotations

import pytest
import torch

from backend.api_requests import RequestError, parse_chat_completion, parse_generate
from backend.textgen import PERIOD_ID, VOCAB, TokenSampler, count_text_tokens, detokenize, tensor_digest
from mminputs import MMItem

MODEL = "m"


def chat(content, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def test_chat_with_image_and_video_parts():
    body = chat(
        [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            {"type": "video_url", "video_url": {"frames": ["/tmp/f0.png", "/tmp/f1.png"]}},
        ],
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    inp = parse_chat_completion(body, 128)
    assert inp.items == (
        MMItem.image("data:image/png;base64,AAA"),
        MMItem.video(["/tmp/f0.png", "/tmp/f1.png"]),
    )
    assert inp.max_new_tokens == 9 and inp.stream and inp.include_usage
    assert inp.text_tokens == count_text_tokens(inp.prompt) and "Compare these." in inp.prompt
    assert parse_chat_completion(chat("hi"), 77).max_new_tokens == 77


def test_any_model_name_is_served_and_echoed_as_sglang_does():
    """sglang 0.5.23 serves whatever model a client names (only `base:adapter` is split, for LoRA); a
    request that names none is `default`. Locust's default `--model` must not fail against our backend."""
    assert parse_chat_completion({**chat("hi"), "model": "other"}, 8).model == "other"
    body = chat("hi")
    del body["model"]
    assert parse_chat_completion(body, 8).model == "default"


def test_digest_depends_on_prompt_sources_and_seed_only():
    a = parse_chat_completion(chat("hi", seed=1), 8)
    assert a.digest == parse_chat_completion(chat("hi", seed=1, max_tokens=3), 8).digest
    assert a.digest != parse_chat_completion(chat("hi", seed=2), 8).digest
    assert a.digest != parse_chat_completion(chat("ho", seed=1), 8).digest


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ([], 400, "JSON object"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, 400, "'model' must be a string"),
        ({"model": MODEL, "messages": []}, 400, "Messages cannot be empty"),
        (chat([{"type": "audio_url"}]), 400, "messages[0].content[0].type 'audio_url'"),
        (chat([{"type": "image_url", "image_url": {}}]), 400, "messages[0].content[0].image_url.url"),
        (chat([{"type": "video_url", "video_url": {"url": "v.mp4"}}]), 400, "video_url.frames"),
        (chat("x", max_tokens=0), 400, "max_tokens must be a positive integer"),
        (chat("x", max_tokens=True), 400, "max_tokens"),
        (chat("x", stream="yes"), 400, "'stream' must be true or false"),
        (chat("x", n=2), 400, "'n' must be 1"),
        (chat("x", seed="s"), 400, "'seed' must be an integer"),
        (chat("x", stream_options=[]), 400, "stream_options must be an object"),
        ({"model": MODEL, "messages": [{"content": "x"}]}, 400, "messages[0].role"),
    ],
)
def test_bad_chat_bodies_name_the_problem(body, status, fragment):
    with pytest.raises(RequestError) as exc:
        parse_chat_completion(body, 8)
    assert exc.value.status == status
    assert fragment in exc.value.message


def test_native_generate_bodies():
    inp = parse_generate(
        {
            "text": "t",
            "image_data": ["a", "b"],
            "video_data": ["f0", "f1"],
            "sampling_params": {"max_new_tokens": 3},
        },
        8,
    )
    assert inp.items == (MMItem.image("a"), MMItem.image("b"), MMItem.video(["f0", "f1"]))
    assert inp.max_new_tokens == 3 and not inp.stream
    assert parse_generate({"text": "t", "image_data": "one"}, 8).items == (MMItem.image("one"),)
    with pytest.raises(RequestError, match="'text' must be a string"):
        parse_generate({"input_ids": [1, 2]}, 8)
    with pytest.raises(RequestError, match="image_data"):
        parse_generate({"text": "t", "image_data": [1]}, 8)
    with pytest.raises(RequestError, match="sampling_params"):
        parse_generate({"text": "t", "sampling_params": []}, 8)
    for bad_video in ({"f": 1}, [], "f0"):
        with pytest.raises(RequestError, match="video_data"):
            parse_generate({"text": "t", "video_data": bad_video}, 8)


def test_token_sampler_is_deterministic_and_seed_sensitive():
    def tokens(seed, digest=b"r", mm=b""):
        s = TokenSampler(seed, digest, mm)
        return [s.next_token() for _ in range(40)]

    assert tokens(0) == tokens(0)
    assert tokens(0) != tokens(1)
    assert tokens(0) != tokens(0, digest=b"q")
    assert tokens(0) != tokens(0, mm=b"pixels")
    assert all(0 <= t <= PERIOD_ID for t in tokens(3))


def test_detokenize_and_count():
    assert detokenize([0, 1, PERIOD_ID], at_start=True) == f"{VOCAB[0]} {VOCAB[1]}."
    assert detokenize([2], at_start=False) == f" {VOCAB[2]}"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        detokenize([10_000], at_start=True)
    assert count_text_tokens("Hello, world!") == 4


def test_tensor_digest_sees_values_shapes_and_absence():
    t = torch.arange(10_000, dtype=torch.float32).reshape(100, 100)
    assert tensor_digest([t, None]) == tensor_digest([t.clone(), None])
    assert tensor_digest([t, None]) != tensor_digest([t.reshape(10, 1000), None])
    assert tensor_digest([t, None]) != tensor_digest([None, t])
    assert tensor_digest([t]) != tensor_digest([t + 1])
