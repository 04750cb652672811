"""Measure one OpenAI-compatible SSE chat stream from timestamped lines (pure; no I/O).

The transports (the gevent dispatcher, the asyncio reference client) read lines from the socket,
stamp each with `time.perf_counter()` as it arrives and feed it here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ERROR_KINDS = ("http", "stream_error", "missing_done", "zero_tokens", "connection", "timeout", "cancelled")


@dataclass
class StreamMeter:
    """Accumulates one response stream; `sent` is the perf_counter time the request was sent."""

    sent: float
    first_token: float | None = None
    last_token: float | None = None
    itl_s: list[float] = field(default_factory=list)
    content_chunks: int = 0
    done: bool = False
    error: str | None = None
    usage_completion: int | None = None
    usage_prompt: int | None = None
    response_id: str | None = None

    def feed_line(self, line: bytes, now: float) -> None:
        """One line of the SSE body (with or without its newline)."""
        line = line.strip()
        if not line.startswith(b"data:"):
            return  # blank separators, comments (": ping"), event/id fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            self.error = self.error or f"unparseable stream chunk: {payload[:80]!r}"
            return
        if not isinstance(chunk, dict):
            self.error = self.error or f"stream chunk is not an object: {payload[:80]!r}"
            return
        if "error" in chunk or chunk.get("object") == "error":
            detail = chunk.get("error", chunk)
            message = detail.get("message", detail) if isinstance(detail, dict) else detail
            self.error = self.error or f"in-stream error: {str(message)[:200]}"
            return
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                self.usage_completion = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                self.usage_prompt = usage["prompt_tokens"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._token(now)

    def _token(self, now: float) -> None:
        if self.first_token is None:
            self.first_token = now
        else:
            self.itl_s.append(now - self.last_token)  # type: ignore[operator]
        self.last_token = now
        self.content_chunks += 1

    @property
    def output_tokens(self) -> int:
        return self.usage_completion if self.usage_completion is not None else self.content_chunks

    def outcome(self) -> tuple[str | None, str | None]:
        """(error_kind, error) for a stream that ended normally at the transport level."""
        if self.error is not None:
            return "stream_error", self.error
        if not self.done:
            return "missing_done", "stream ended without data: [DONE]"
        if self.content_chunks == 0 or self.output_tokens == 0:
            return "zero_tokens", "stream finished with no output tokens"
        return None, None
