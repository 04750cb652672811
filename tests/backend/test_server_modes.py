"""Every multimodal-input mode serves exactly the same output (text, token counts, errors) at TP=2."""

from __future__ import annotations

import concurrent.futures
import re

import pytest
from backend_testlib import MODEL, Server, chat_body, image_data_url, request, running_server

from mminputs import MMMode

pytestmark = pytest.mark.integration


def _requests() -> list[tuple[str, dict]]:
    red, blue = image_data_url(64, 48, (200, 0, 0)), image_data_url(120, 90, (0, 0, 200), fmt="JPEG")
    frames = [image_data_url(96, 64, (i * 30, 100, 50)) for i in range(5)]
    video = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What happens in the video?"},
                    {"type": "video_url", "video_url": {"frames": frames}},
                ],
            }
        ],  # fmt: skip
        "max_tokens": 6,
    }
    return [
        ("/v1/chat/completions", chat_body(images=(red,), max_tokens=6)),
        ("/v1/chat/completions", chat_body(images=(blue,), max_tokens=6, seed=2)),
        ("/v1/chat/completions", chat_body(images=(red, blue), max_tokens=6)),
        ("/v1/chat/completions", video),
        ("/v1/chat/completions", chat_body(text="no image here", max_tokens=6)),
        ("/v1/chat/completions", chat_body(images=("data:image/png;base64,AAAA",), max_tokens=6)),
        (
            "/generate",
            {"text": "native", "image_data": [blue, red], "sampling_params": {"max_new_tokens": 6}},
        ),
        (
            "/generate",
            {"text": "native video", "video_data": frames[:3], "sampling_params": {"max_new_tokens": 6}},
        ),
    ]


def _served(url: str) -> list[tuple[int, object]]:
    """What each request got, reduced to what must be identical across modes."""
    reqs = _requests()
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(reqs)
    ) as pool:  # concurrent: one received batch
        answers = list(pool.map(lambda r: request(url + r[0], r[1]), reqs))
    out: list[tuple[int, object]] = []
    for status, body in answers:
        if status != 200:  # object reprs in messages carry addresses; the rest must match
            out.append((status, re.sub(r"0x[0-9a-f]+", "0x..", body["message"])))
        elif "choices" in body:
            out.append((status, (body["choices"][0]["message"]["content"], body["usage"])))
        else:
            meta = body["meta_info"]
            out.append((status, (body["text"], meta["prompt_tokens"], meta["completion_tokens"])))
    return out


def test_every_mode_serves_the_same_output(tmp_path, server: Server):
    # The shared server runs the default mode, per_rank: the reference.
    assert request(server.url + "/server_info")[1]["mm_input_mode"] == MMMode.PER_RANK.value
    reference = _served(server.url)
    assert [s for s, _ in reference] == [200, 200, 200, 200, 200, 400, 200, 200]
    texts = [body[0] for s, body in reference if s == 200 and isinstance(body, tuple)]
    assert len(set(texts)) == len(texts)  # different requests, different outputs
    for mode in MMMode:
        if mode == MMMode.PER_RANK:
            continue
        # per_request is started with sglang's own flag spelling, to cover the alias too.
        flags = ["--mm-input-mode", mode.value]
        if mode == MMMode.PER_REQUEST:
            flags = ["--enable-broadcast-mm-inputs-process"]
        with running_server(tmp_path, "--tp-size", "2", "--step-cost-ms", "0.2", *flags) as srv:
            assert request(srv.url + "/server_info")[1]["mm_input_mode"] == mode.value
            assert _served(srv.url) == reference, mode
            assert request(srv.url + "/health_generate")[0] == 200
