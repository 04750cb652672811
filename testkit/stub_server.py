"""A minimal OpenAI-compatible streaming chat endpoint for tests and load-generator benchmarks.

    python -m testkit.stub_server --port 8123 [--arm baseline] [--ttft-ms 20 --itl-ms 5 --tokens 16]

It streams sglang-shaped SSE chunks (`data: {...}`, a usage chunk, `data: [DONE]`), names its arm
in `x-canary-arm` and in each chunk (`arm`: what a router in front, which sets that header itself, cannot
change), and records its own time to first token per response id (GET /stub/timings), so a client's TTFT
can be checked against the server's. A request may pace its own stream (`x-stub-ttft-ms`,
`x-stub-itl-ms` headers), so slow and fast streams share one stub. Deterministic faults for tests: every
Nth request answers HTTP 503, breaks the stream with an error chunk, or omits `[DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass

from aiohttp import web

_MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')


@dataclass(frozen=True)
class StubSettings:
    arm: str = ""
    tokens: int = 0  # 0: as many as the request's max_tokens
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    http_error_every: int = 0
    stream_error_every: int = 0
    drop_done_every: int = 0
    keep_timings: int = 100_000


def _every(n: int, count: int) -> bool:
    return n > 0 and count % n == 0


def _chunk(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class StubServer:
    def __init__(self, settings: StubSettings) -> None:
        self.settings = settings
        self.counter = itertools.count(1)
        self.timings: dict[str, dict[str, float]] = {}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        count = next(self.counter)
        body = await request.read()
        s = self.settings
        headers = {"x-canary-arm": s.arm} if s.arm else {}
        if _every(s.http_error_every, count):
            return web.json_response(
                {"object": "error", "message": "stub overloaded"}, status=503, headers=headers
            )
        match = _MAX_TOKENS.search(body[-512:])
        tokens = s.tokens or (int(match.group(1)) if match else 16)
        response_id = f"chatcmpl-stub-{count}"
        ttft_ms = float(request.headers.get("x-stub-ttft-ms", s.ttft_ms))
        itl_ms = float(request.headers.get("x-stub-itl-ms", s.itl_ms))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if ttft_ms:
            await asyncio.sleep(ttft_ms / 1000.0)
        base = {"id": response_id, "object": "chat.completion.chunk", "model": "stub"}
        if s.arm:
            base["arm"] = s.arm
        first_token = None
        for index in range(tokens):
            if index and itl_ms:
                await asyncio.sleep(itl_ms / 1000.0)
            if index == tokens // 2 and _every(s.stream_error_every, count):
                await response.write(
                    _chunk({"object": "error", "message": "stub stream failure", "code": 500})
                )
                break
            await response.write(
                _chunk({**base, "choices": [{"index": 0, "delta": {"content": f"t{index} "}}]})
            )
            if first_token is None:
                first_token = time.perf_counter()
        else:
            await response.write(
                _chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            )
            usage = {"prompt_tokens": len(body) // 4, "completion_tokens": tokens, "total_tokens": tokens}
            await response.write(_chunk({**base, "choices": [], "usage": usage}))
        if not _every(s.drop_done_every, count):
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        if first_token is not None and len(self.timings) < s.keep_timings:
            done = time.perf_counter()
            self.timings[response_id] = {
                "ttft_ms": (first_token - received) * 1000.0,
                "e2e_ms": (done - received) * 1000.0,
            }
        return response

    async def timings_view(self, request: web.Request) -> web.Response:
        return web.json_response(self.timings)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/stub/timings", self.timings_view)
        app.router.add_get("/health", self.health)
        return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--arm", default="", help="the arm it names in x-canary-arm and in each chunk (none if empty)"
    )
    parser.add_argument(
        "--tokens", type=int, default=0, help="tokens per response (0: the request's max_tokens)"
    )
    parser.add_argument(
        "--ttft-ms",
        type=float,
        default=0.0,
        help="delay before the first token (a request's x-stub-ttft-ms wins)",
    )
    parser.add_argument(
        "--itl-ms", type=float, default=0.0, help="delay between tokens (a request's x-stub-itl-ms wins)"
    )
    parser.add_argument("--http-error-every", type=int, default=0, help="every Nth request answers HTTP 503")
    parser.add_argument(
        "--stream-error-every", type=int, default=0, help="every Nth stream breaks with an error"
    )
    parser.add_argument("--drop-done-every", type=int, default=0, help="every Nth stream omits data: [DONE]")
    args = parser.parse_args(argv)
    settings = StubSettings(
        arm=args.arm,
        tokens=args.tokens,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        http_error_every=args.http_error_every,
        stream_error_every=args.stream_error_every,
        drop_done_every=args.drop_done_every,
    )
    web.run_app(StubServer(settings).app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
