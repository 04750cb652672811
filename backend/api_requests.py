"""Request bodies of the OpenAI chat API and sglang's native /generate, parsed into one generation input.

Anything malformed is a `RequestError` naming the bad field; it becomes an OpenAI-style 4xx body and
never reaches the scheduler ranks. Images and video frames are not decoded here: the ranks materialize
them through the configured mminputs mode (a bad image is reported back from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.textgen import count_text_tokens, request_digest
from mminputs.types import MMItem

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and the OpenAI error type to answer with."""

    def __init__(
        self, message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param


@dataclass(frozen=True)
class GenerationInput:
    model: str  # echoed in responses, as sglang does (it serves whatever name a client sends)
    prompt: str
    items: tuple[MMItem, ...]
    text_tokens: int
    max_new_tokens: int
    stream: bool
    include_usage: bool
    digest: bytes


DEFAULT_MODEL_NAME = "default"  # sglang's, for a request that names no model


def parse_chat_completion(body: Any, max_new_tokens_default: int) -> GenerationInput:
    """A chat completion request. Like sglang 0.5.23, any model name is served (sglang only splits a
    `base:adapter` name for LoRA), and the response names the model the request named."""
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model", DEFAULT_MODEL_NAME)
    if not isinstance(model, str):
        raise RequestError(f"'model' must be a string, got {type(model).__name__}", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("Messages cannot be empty.", param="messages")
    n = body.get("n", 1)
    if n not in (1, None):
        raise RequestError(f"'n' must be 1 on this server, got {n!r}", param="n")
    prompt_parts: list[str] = []
    items: list[MMItem] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", param="messages")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"messages[{i}].role must be a non-empty string", param="messages")
        text = _message_content(message.get("content"), f"messages[{i}].content", items)
        prompt_parts.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    prompt_parts.append("<|im_start|>assistant\n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stream = _bool(body.get("stream", False), "stream")
    stream_options = body.get("stream_options")
    stream_options = {} if stream_options is None else stream_options
    if not isinstance(stream_options, dict):
        raise RequestError("stream_options must be an object", param="stream_options")
    include_usage = _bool(stream_options.get("include_usage", False), "stream_options.include_usage")
    seed = _optional_int(body.get("seed"), "seed")
    return _input(
        model, "".join(prompt_parts), items, max_tokens, max_new_tokens_default, stream, include_usage, seed
    )


def parse_generate(body: Any, max_new_tokens_default: int) -> GenerationInput:
    """sglang's native /generate: `text`, `image_data` (one source or a list), `video_data` (a list of
    frame sources, or a list of such lists), `sampling_params`, `stream`."""
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    text = body.get("text")
    if not isinstance(text, str):
        raise RequestError(
            "'text' must be a string (batched or token-id input is not supported here)", param="text"
        )
    items: list[MMItem] = []
    image_data = body.get("image_data")
    if image_data is not None:
        sources = [image_data] if isinstance(image_data, str) else image_data
        if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
            raise RequestError("'image_data' must be a source string or a list of them", param="image_data")
        items.extend(MMItem.image(s) for s in sources)
    video_data = body.get("video_data")
    if video_data is not None:
        if not isinstance(video_data, list) or not video_data:
            raise RequestError(
                "'video_data' must be a list of frame sources (or a list of such lists)", param="video_data"
            )
        videos = video_data if isinstance(video_data[0], list) else [video_data]
        for video in videos:
            items.append(MMItem.video(_frames(video, "video_data")))
    sampling = body.get("sampling_params")
    sampling = {} if sampling is None else sampling
    if not isinstance(sampling, dict):
        raise RequestError("'sampling_params' must be an object", param="sampling_params")
    stream = _bool(body.get("stream", False), "stream")
    seed = _optional_int(sampling.get("sampling_seed", sampling.get("seed")), "sampling_params.sampling_seed")
    return _input(
        "", text, items, sampling.get("max_new_tokens"), max_new_tokens_default, stream, False, seed
    )


def _input(
    model: str,
    prompt: str,
    items: list[MMItem],
    max_tokens: Any,
    default: int,
    stream: bool,
    include_usage: bool,
    seed: int | None,
) -> GenerationInput:
    if max_tokens is None:
        max_tokens = default
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}", param="max_tokens")
    sources = [s for item in items for s in item.sources]
    return GenerationInput(
        model=model,
        prompt=prompt,
        items=tuple(items),
        text_tokens=count_text_tokens(prompt),
        max_new_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        digest=request_digest(prompt, sources, seed),
    )


def _message_content(content: Any, where: str, items: list[MMItem]) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of parts", param="messages")
    text: list[str] = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RequestError(f"{here} must be an object", param="messages")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{here}.text must be a string", param="messages")
            text.append(part["text"])
        elif kind == "image_url":
            items.append(MMItem.image(_url(part.get("image_url"), f"{here}.image_url")))
            text.append(IMAGE_PLACEHOLDER)
        elif kind == "video_url":
            video = part.get("video_url")
            frames = video.get("frames") if isinstance(video, dict) else None
            if frames is None:
                raise RequestError(
                    f"{here}.video_url.frames must list the video's frame sources (video files are not decoded here)",
                    param="messages",
                )
            items.append(MMItem.video(_frames(frames, f"{here}.video_url.frames")))
            text.append(VIDEO_PLACEHOLDER)
        else:
            raise RequestError(
                f"{here}.type {kind!r} is not supported (text, image_url, video_url)", param="messages"
            )
    return "".join(text)


def _url(value: Any, where: str) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}.url must be a non-empty string", param="messages")
    return url


def _frames(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(f, str) and f for f in value):
        raise RequestError(f"{where} must be a non-empty list of frame sources", param=where.split(".")[0])
    return tuple(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, got {value!r}", param=name)
    return value


def _optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer, got {value!r}", param=name)
    return value
