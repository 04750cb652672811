"""The HTTP API of a real TP=2 server (gloo ranks as processes): chat, /generate, models, health, metrics."""

from __future__ import annotations

import pytest
from backend_testlib import (
    MODEL,
    Server,
    chat_body,
    image_data_url,
    metric_samples,
    request,
    sample_value,
    stream,
)
from PIL import Image

from backend.metrics import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS
from backend.textgen import count_text_tokens

pytestmark = pytest.mark.integration


def test_chat_non_streaming_counts_text_and_image_tokens(server: Server):
    text_only = chat_body(max_tokens=5)
    with_image = chat_body(images=(image_data_url(64, 48),), max_tokens=5)
    status, plain = request(server.url + "/v1/chat/completions", text_only)
    assert status == 200, plain
    status, body = request(server.url + "/v1/chat/completions", with_image)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) >= 3
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5
    # A 64x48 image resizes to 56x56 (28-pixel grid): 4x4 patches, merged 2x2 -> 4 image tokens.
    placeholder_tokens = count_text_tokens("<|vision_start|><|image_pad|><|vision_end|>")
    assert usage["prompt_tokens"] == plain["usage"]["prompt_tokens"] + placeholder_tokens + 4


def test_chat_streaming_matches_non_streaming_and_reports_usage(server: Server):
    body = chat_body(images=(image_data_url(),), max_tokens=7, seed=11)
    _, full = request(server.url + "/v1/chat/completions", body)
    status, events = stream(
        server.url + "/v1/chat/completions",
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["prompt_tokens"] == full["usage"]["prompt_tokens"]
    # Without include_usage there is no usage chunk.
    status, events = stream(server.url + "/v1/chat/completions", {**body, "stream": True})
    assert status == 200 and events[-1] == "[DONE]" and len(events) == len(chunks)  # all but the usage chunk
    assert all(e == "[DONE]" or e.get("usage") is None for e in events)


def test_output_is_deterministic_per_request_and_seed(server: Server):
    url = server.url + "/v1/chat/completions"
    image = image_data_url(80, 60, (10, 120, 250))
    texts = [request(url, chat_body(images=(image,), max_tokens=12, seed=3))[1] for _ in range(2)]
    assert texts[0]["choices"][0]["message"] == texts[1]["choices"][0]["message"]
    other_seed = request(url, chat_body(images=(image,), max_tokens=12, seed=4))[1]
    other_image = request(url, chat_body(images=(image_data_url(80, 60, (0, 0, 0)),), max_tokens=12, seed=3))[
        1
    ]
    first = texts[0]["choices"][0]["message"]["content"]
    assert other_seed["choices"][0]["message"]["content"] != first
    assert other_image["choices"][0]["message"]["content"] != first


def test_native_generate_streaming_and_not(server: Server):
    body = {"text": "A picture:", "image_data": image_data_url(), "sampling_params": {"max_new_tokens": 6}}
    status, out = request(server.url + "/generate", body)
    assert status == 200, out
    meta = out["meta_info"]
    assert meta["completion_tokens"] == 6 and len(out["output_ids"]) == 6
    assert meta["finish_reason"] == {"type": "length", "length": 6}
    assert meta["prompt_tokens"] > count_text_tokens("A picture:")
    status, events = stream(server.url + "/generate", {**body, "stream": True})
    assert status == 200 and events[-1] == "[DONE]"
    texts = [e["text"] for e in events[:-1]]
    assert len(texts) == 6 and texts[-1] == out["text"]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(5))  # cumulative, as sglang streams it


def test_models_server_info_health_ready(server: Server):
    status, models = request(server.url + "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [MODEL]
    status, info = request(server.url + "/server_info")
    assert status == 200
    assert info["tp_size"] == 2 and info["mm_input_mode"] == "per_rank" and info["status"] == "up"
    assert info["enable_broadcast_mm_inputs_process"] is False
    for path in ("/health", "/health_generate", "/ready"):
        assert request(server.url + path)[0] == 200, path


def test_metrics_use_sglang_names_labels_and_buckets(server: Server):
    before = metric_samples(server.url)
    n0 = sample_value(before, "sglang:num_requests_total", model_name=MODEL, is_streaming="false")
    assert (
        request(server.url + "/v1/chat/completions", chat_body(images=(image_data_url(),), max_tokens=4))[0]
        == 200
    )
    after = metric_samples(server.url)
    labels = {"model_name": MODEL, "engine_type": "unified"}
    assert sample_value(after, "sglang:num_requests_total", **labels, is_streaming="false") == n0 + 1
    assert sample_value(after, "sglang:generation_tokens_total", **labels, is_streaming="false") >= 4
    assert sample_value(after, "sglang:prompt_tokens_total", **labels, is_streaming="false") > 0
    for family, buckets, extra in (
        ("sglang:e2e_request_latency_seconds", E2E_BUCKETS, {"is_streaming": "false"}),
        ("sglang:time_to_first_token_seconds", TTFT_BUCKETS, {"is_streaming": "false"}),
        ("sglang:inter_token_latency_seconds", ITL_BUCKETS, {}),
    ):
        les = [
            s.labels["le"]
            for s in after[family]
            if s.name.endswith("_bucket")
            and all(s.labels.get(k) == v for k, v in {**labels, **extra}.items())
        ]
        assert [float(x) for x in les] == [float(b) for b in buckets] + [float("inf")], family
    sched = {**labels, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
    assert sample_value(after, "sglang:num_running_reqs", **sched) == 0
    assert sample_value(after, "sglang:num_queue_reqs", **sched) == 0
    ranks = {s.labels["rank"] for s in after["backend_process_cpu_seconds"]}
    assert ranks == {"tokenizer", "0", "1"}
    for rank in ranks:
        assert sample_value(after, "backend_process_resident_memory_bytes", rank=rank) > 10e6
        assert sample_value(after, "backend_process_cpu_seconds_total", rank=rank) > 0
    assert sample_value(after, "backend_cpu_allotted_cores") == 1.5
    assert sample_value(after, "backend_mm_stage_seconds_count") >= 1
    assert sample_value(after, "backend_mm_cache_entries") == 0
    assert (
        sample_value(after, "sglang:http_responses_total", endpoint="/v1/chat/completions", status_code="200")
        >= 1
    )
    assert not [s.name for fam in after.values() for s in fam if s.name.endswith("_created")]  # as sglang


def test_local_file_image_paths_are_served_like_data_urls(server: Server, tmp_path):

    path = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    by_url = request(
        server.url + "/v1/chat/completions", chat_body(images=(image_data_url(64, 48),), max_tokens=5)
    )
    for source in (str(path), f"file://{path}"):
        status, body = request(server.url + "/v1/chat/completions", chat_body(images=(source,), max_tokens=5))
        assert status == 200, body
        # Same pixels, same multimodal tokens (the text differs: the source string seeds it too).
        assert body["usage"]["prompt_tokens"] == by_url[1]["usage"]["prompt_tokens"]
