import json

from loadtest.stream import StreamMeter


def chunk(content=None, usage=None, cid="c1"):
    delta = {} if content is None else {"content": content}
    payload = (
        {"id": cid, "choices": [{"index": 0, "delta": delta}]}
        if usage is None
        else {"id": cid, "choices": [], "usage": usage}
    )
    return b"data: " + json.dumps(payload).encode() + b"\n"


def test_ttft_is_the_first_non_empty_content_and_gaps_follow():
    meter = StreamMeter(sent=10.0)
    meter.feed_line(b": keep-alive\n", 10.001)
    meter.feed_line(chunk(None), 10.002)  # role-only chunk
    meter.feed_line(chunk(""), 10.003)  # empty content
    meter.feed_line(b"\n", 10.004)
    meter.feed_line(chunk("Hel"), 10.050)
    meter.feed_line(chunk("lo"), 10.060)
    meter.feed_line(chunk("!"), 10.075)
    meter.feed_line(chunk(usage={"prompt_tokens": 12, "completion_tokens": 3}), 10.076)
    meter.feed_line(b"data: [DONE]\n", 10.080)
    assert meter.first_token == 10.050
    assert [round(g, 6) for g in meter.itl_s] == [0.01, 0.015]
    assert meter.output_tokens == 3 and meter.usage_prompt == 12
    assert meter.response_id == "c1"
    assert meter.outcome() == (None, None)


def test_output_tokens_fall_back_to_content_chunks_without_usage():
    meter = StreamMeter(sent=0.0)
    for i in range(4):
        meter.feed_line(chunk(f"t{i}"), 0.1 * (i + 1))
    meter.feed_line(b"data: [DONE]", 0.5)
    assert meter.usage_completion is None
    assert meter.output_tokens == 4


def test_failures_are_classified():
    missing_done = StreamMeter(sent=0.0)
    missing_done.feed_line(chunk("a"), 0.1)
    assert missing_done.outcome()[0] == "missing_done"

    zero = StreamMeter(sent=0.0)
    zero.feed_line(chunk(usage={"completion_tokens": 0}), 0.1)
    zero.feed_line(b"data: [DONE]", 0.2)
    assert zero.outcome()[0] == "zero_tokens"

    errored = StreamMeter(sent=0.0)
    errored.feed_line(chunk("a"), 0.1)
    errored.feed_line(b'data: {"object": "error", "message": "rank 2 failed", "code": 500}', 0.2)
    errored.feed_line(b"data: [DONE]", 0.3)
    kind, message = errored.outcome()
    assert kind == "stream_error" and "rank 2 failed" in message

    openai_error = StreamMeter(sent=0.0)
    openai_error.feed_line(b'data: {"error": {"message": "bad image"}}', 0.1)
    assert openai_error.outcome() == ("stream_error", "in-stream error: bad image")

    garbage = StreamMeter(sent=0.0)
    garbage.feed_line(b"data: {not json", 0.1)
    assert garbage.outcome()[0] == "stream_error"
