"""HTTP front of the embedded backend (aiohttp): sglang 0.5.23's OpenAI-compatible and native endpoints,
health and readiness, Prometheus metrics, and the rehearsal fault endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api_requests import GenerationInput, RequestError, parse_chat_completion, parse_generate
from backend.config import ServerConfig
from backend.engine import Engine, EngineFailed
from backend.faults import FaultSettingsError
from backend.ipc import ErrorEvent, StepReport, TokenEvent
from backend.metrics import BackendMetrics
from backend.textgen import detokenize

log = logging.getLogger("backend.http")

COMPAT_VERSION = "0.5.23"  # the sglang release whose API and metrics this server follows
HEALTH_RID_PREFIX = "HEALTH_CHECK"
_ROUTES_COUNTED = {
    "/v1/chat/completions", "/generate", "/v1/models", "/health", "/health_generate", "/ready",
    "/server_info", "/get_server_info", "/metrics", "/rehearsal/faults", "/model_info",
}  # fmt: skip


class BackendServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.metrics = BackendMetrics(
            cfg.served_model_name, cfg.cpu_cores, self.engine.process_ids, cfg.latency_buckets
        )
        self.engine.on_report.append(self._on_report)
        self.faults = cfg.faults
        self._fault_rng = random.Random(cfg.seed)
        self.draining = False
        self.in_flight = 0
        self.started_at = time.time()
        self._gen_tokens = 0
        self._gen_window: tuple[float, int] = (time.monotonic(), 0)
        self.app = web.Application(client_max_size=cfg.max_request_bytes, middlewares=[self._count_http])
        r = self.app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/generate", self.generate)
        r.add_put("/generate", self.generate)
        r.add_get("/v1/models", self.models)
        r.add_get("/health", self.health_generate)
        r.add_get("/health_generate", self.health_generate)
        r.add_get("/ready", self.ready)
        r.add_get("/server_info", self.server_info)
        r.add_get("/get_server_info", self.server_info)
        r.add_get("/model_info", self.model_info)
        r.add_get("/metrics", self.metrics_endpoint)
        r.add_get("/rehearsal/faults", self.get_faults)
        r.add_post("/rehearsal/faults", self.post_faults)

    # ---- state ----
    @property
    def healthy(self) -> bool:
        return self.engine.ready.is_set() and not self.engine.failed.is_set()

    def _on_report(self, report: StepReport) -> None:
        m = self.metrics
        s = report.stats
        m.num_running.labels(**m.sched_labels).set(s.num_running_reqs)
        m.num_queue.labels(**m.sched_labels).set(s.num_queue_reqs)
        m.mm_cache_entries.set(s.mm_cache_entries)
        for seconds in s.mm_stage_seconds:
            m.mm_stage.observe(seconds)
        if report.phases:
            m.scheduler_phases.update(report.phases)
        self._gen_tokens += sum(1 for e in report.events if isinstance(e, TokenEvent))

    def _update_gen_throughput(self) -> None:
        """Tokens per second since the previous scrape (so an idle server reads 0, not its last burst)."""
        t0, n0 = self._gen_window
        now = time.monotonic()
        if now - t0 > 0.05:
            m = self.metrics
            m.gen_throughput.labels(**m.sched_labels).set((self._gen_tokens - n0) / (now - t0))
            self._gen_window = (now, self._gen_tokens)

    @web.middleware
    async def _count_http(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ):
        endpoint = request.path if request.path in _ROUTES_COUNTED else "other"
        m = self.metrics
        m.http_requests.labels(endpoint, request.method).inc()
        active = m.http_active.labels(endpoint, request.method)
        active.inc()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception as exc:  # a bug must still answer in the API's error shape, and be logged
            log.exception("unhandled error on %s %s", request.method, request.path)
            resp = self._error(
                f"Internal server error: {type(exc).__name__}: {exc}", 500, "InternalServerError"
            )
            status = resp.status
            return resp
        finally:
            active.dec()
            m.http_responses.labels(endpoint, str(status), request.method).inc()

    # ---- errors ----
    def _error(
        self, message: str, status: int, err_type: str, param: str | None = None, *, generation: bool = True
    ) -> web.Response:
        """An OpenAI-style error body; `generation` errors also count in backend_request_errors_total."""
        if generation:
            self.metrics.request_errors.labels(str(status)).inc()
        body = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
        return web.json_response(body, status=status)

    async def _read_json(self, request: web.Request) -> Any:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(
                f"request body exceeds {self.cfg.max_request_bytes} bytes", 413, "RequestTooLarge"
            ) from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"Invalid JSON body: {exc}") from None

    def _refuse_if_unavailable(self) -> web.Response | None:
        if self.engine.failed.is_set():
            return self._error(f"server unhealthy: {self.engine.failure}", 503, "ServiceUnavailableError")
        if self.draining:
            return self._error("server is shutting down", 503, "ServiceUnavailableError")
        if not self.engine.ready.is_set():
            return self._error("server is starting", 503, "ServiceUnavailableError")
        return None

    async def _apply_request_faults(self) -> web.Response | None:
        """Rehearsal faults applied in the front: injected errors and extra latency."""
        faults = self.faults
        if faults.error_ratio > 0 and self._fault_rng.random() < faults.error_ratio:
            return self._error("rehearsal fault: injected error", 500, "InternalServerError")
        if faults.extra_latency_ms > 0:
            await asyncio.sleep(faults.extra_latency_ms / 1000.0)
        return None

    def _reset_if_faulted(self, request: web.Request) -> bool:
        """Rehearsal fault: reset the connection before any response, as a crashed server does. Nothing is
        counted: sglang's metrics never see such a request; only the client or the gateway do."""
        if not (self.faults.reset_ratio > 0 and self._fault_rng.random() < self.faults.reset_ratio):
            return False
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: the close sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return True

    # ---- generation endpoints ----
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        if self._reset_if_faulted(request):
            return web.Response(status=500)  # never sent: the connection is gone
        try:
            inp = parse_chat_completion(await self._read_json(request), self.cfg.max_new_tokens_default)
        except RequestError as exc:
            return self._error(exc.message, exc.status, exc.err_type, exc.param)
        return await self._serve(
            request, inp, "chatcmpl-" + uuid.uuid4().hex, _ChatFormat(inp.model), received
        )

    async def generate(self, request: web.Request) -> web.StreamResponse:
        received = time.perf_counter()
        if self._reset_if_faulted(request):
            return web.Response(status=500)  # never sent: the connection is gone
        try:
            inp = parse_generate(await self._read_json(request), self.cfg.max_new_tokens_default)
        except RequestError as exc:
            return self._error(exc.message, exc.status, exc.err_type, exc.param)
        return await self._serve(request, inp, uuid.uuid4().hex, _NativeFormat(), received)

    async def _serve(
        self, request: web.Request, inp: GenerationInput, rid: str, fmt: _Format, received: float
    ) -> web.StreamResponse:
        """Run one generation; latencies count from when the request arrived (as sglang's received_time)."""
        refused = self._refuse_if_unavailable()
        if refused is not None:
            return refused
        self.in_flight += 1  # from here on a drain waits for this request
        m = self.metrics
        labels = m.labels
        streaming = "true" if inp.stream else "false"
        t_start = received
        tokens: list[int] = []
        prompt_tokens = 0
        response: web.StreamResponse | None = None
        client_gone = True  # until the request ends any other way
        last_token_at = first_token_at = t_start
        try:
            faulted = await self._apply_request_faults()
            if faulted is not None:
                client_gone = False
                return faulted
            # aclosing: a request that ends early (error, disconnect) is aborted on the ranks right away.
            async with contextlib.aclosing(self.engine.generate(inp, rid)) as events:
                async for event in events:
                    if isinstance(event, ErrorEvent):
                        client_gone = False
                        err_type = "BadRequestError" if event.status < 500 else "InternalServerError"
                        return self._error(event.message, event.status, err_type)
                    now = time.perf_counter()
                    prompt_tokens = event.prompt_tokens
                    if not tokens:
                        first_token_at = now
                        m.ttft.labels(**labels, is_streaming=streaming).observe(now - t_start)
                    else:
                        m.itl.labels(**labels).observe(now - last_token_at)
                    last_token_at = now
                    new_text = detokenize(event.token_ids, at_start=not tokens)
                    tokens.extend(event.token_ids)
                    if inp.stream:
                        if response is None:
                            response = await self._start_stream(request)
                            for chunk in fmt.first_chunks(rid):
                                await response.write(chunk)
                        await response.write(
                            fmt.token_chunk(rid, new_text, tokens, prompt_tokens, event.finished)
                        )
                    if event.finished:
                        break
            e2e = time.perf_counter() - t_start
            m.num_requests.labels(**labels, is_streaming=streaming).inc()
            m.prompt_tokens.labels(**labels, is_streaming=streaming).inc(prompt_tokens)
            m.generation_tokens.labels(**labels, is_streaming=streaming).inc(len(tokens))
            m.prompt_tokens_hist.labels(**labels).observe(prompt_tokens)
            m.generation_tokens_hist.labels(**labels).observe(len(tokens))
            m.e2e.labels(**labels, is_streaming=streaming).observe(e2e)
            if len(tokens) > 1:  # sglang: (finished - first token) / (completion tokens - 1)
                m.tpot.labels(**labels, is_streaming=streaming).observe(
                    (last_token_at - first_token_at) / (len(tokens) - 1)
                )
            if response is None:
                client_gone = False
                return web.json_response(fmt.full_response(rid, tokens, prompt_tokens, e2e))
            for chunk in fmt.last_chunks(rid, tokens, prompt_tokens, inp.include_usage, e2e):
                await response.write(chunk)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            client_gone = False
            return response
        except EngineFailed as exc:
            client_gone = False
            if response is None:
                return self._error(str(exc), 500, "InternalServerError")
            body = {"error": {"message": str(exc), "type": "InternalServerError", "code": 500}}
            self.metrics.request_errors.labels("500").inc()
            await response.write(b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n")
            await response.write_eof()
            return response
        except ConnectionResetError:
            log.info("client of %s disconnected mid-stream; request aborted", rid)
            assert response is not None  # only a stream write can fail this way
            return response
        finally:
            self.in_flight -= 1
            if client_gone:  # the client disconnected (write failed or handler cancelled): sglang's abort
                m.num_aborted.labels(**labels).inc()

    async def _start_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return response

    # ---- health, readiness, info ----
    async def health_generate(self, request: web.Request) -> web.Response:
        """503 while starting, draining or failed; else 200 once the scheduler shows life in time.

        As sglang: a one-token generation is queued, and any output from the scheduler after the check
        began counts (a busy server answers at once instead of queueing the probe behind its load).
        """
        if self.draining or not self.healthy:
            return web.Response(status=503)
        inp = GenerationInput("", "", (), 1, 1, False, False, b"health")
        rid = f"{HEALTH_RID_PREFIX}_{uuid.uuid4().hex}"
        tic = time.monotonic()

        async def one_token() -> bool:
            async with contextlib.aclosing(self.engine.generate(inp, rid)) as events:
                async for event in events:
                    return isinstance(event, TokenEvent)
            return False

        probe = asyncio.create_task(one_token())
        ok = False
        try:
            while time.monotonic() - tic < self.cfg.health_timeout_s:
                done, _ = await asyncio.wait({probe}, timeout=0.1)
                if done:
                    ok = probe.exception() is None and probe.result()
                    break
                if self.engine.last_receive > tic:
                    ok = True
                    break
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        return web.Response(status=200 if ok and self.healthy else 503)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy and not self.draining else 503)

    async def models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.cfg.served_model_name,
            "object": "model",
            "created": int(self.started_at),
            "owned_by": "sglang",
            "root": self.cfg.model_path,
            "max_model_len": 32768,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def model_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": self.cfg.model_path,
                "served_model_name": self.cfg.served_model_name,
                "is_generation": True,
                "has_image_understanding": True,
            }
        )

    async def server_info(self, request: web.Request) -> web.Response:
        cfg = self.cfg
        s = self.engine.stats
        ready = self.engine.ranks_ready
        return web.json_response(
            {
                "model_path": cfg.model_path,
                "served_model_name": cfg.served_model_name,
                "tp_size": cfg.tp_size,
                "host": cfg.host,
                "port": cfg.port,
                "enable_metrics": cfg.enable_metrics,
                "enable_broadcast_mm_inputs_process": cfg.mm_input_mode == "per_request",
                "mm_input_mode": cfg.mm_input_mode,
                "cpu_cores": cfg.cpu_cores,
                "step_cost_ms": cfg.step_cost_ms,
                "max_running_requests": cfg.max_running_requests,
                "max_new_tokens_default": cfg.max_new_tokens_default,
                "random_seed": cfg.seed,
                "rehearsal_faults": self.faults.as_dict(),
                "internal_states": [
                    {
                        "num_running_reqs": s.num_running_reqs,
                        "num_queue_reqs": s.num_queue_reqs,
                        "mm_cache_entries": s.mm_cache_entries,
                    }
                ],  # fmt: skip
                "device": ready.device if ready else None,
                "step_all_reduce": ready.step_all_reduce if ready else None,
                "status": "failed"
                if self.engine.failed.is_set()
                else "draining"
                if self.draining
                else "up"
                if self.healthy
                else "starting",
                "version": COMPAT_VERSION,
                "frontend": "embedded-backend",
            }
        )

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        if not self.cfg.enable_metrics:
            return self._error(
                "metrics are disabled (start with --enable-metrics)", 404, "NotFoundError", generation=False
            )
        self._update_gen_throughput()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- rehearsal faults ----
    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_dict())

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            faults = self.faults.updated(await self._read_json(request))
        except RequestError as exc:
            return self._error(exc.message, exc.status, exc.err_type, generation=False)
        except (FaultSettingsError, TypeError) as exc:
            return self._error(str(exc), 400, "BadRequestError", generation=False)
        if self.engine.ready.is_set() and not self.engine.failed.is_set():
            await self.engine.set_faults(faults)
        self.faults = faults
        log.warning("rehearsal faults now %s", faults.as_dict())
        return web.json_response(faults.as_dict())


class _Format:
    def first_chunks(self, rid: str) -> list[bytes]:
        return []

    def token_chunk(
        self, rid: str, new_text: str, tokens: list[int], prompt_tokens: int, finished: bool
    ) -> bytes:
        raise NotImplementedError

    def last_chunks(
        self, rid: str, tokens: list[int], prompt_tokens: int, include_usage: bool, e2e: float
    ) -> list[bytes]:
        return []

    def full_response(self, rid: str, tokens: list[int], prompt_tokens: int, e2e: float) -> dict:
        raise NotImplementedError


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


class _ChatFormat(_Format):
    """OpenAI chat.completion / chat.completion.chunk objects, as sglang shapes them."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = int(time.time())

    def _chunk(self, rid: str, delta: dict, finish_reason: str | None, usage: dict | None = None) -> bytes:
        choices = [] if usage is not None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]  # fmt: skip
        obj = {"id": rid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": choices, "usage": usage}  # fmt: skip
        return _sse(obj)

    def first_chunks(self, rid: str) -> list[bytes]:
        return [self._chunk(rid, {"role": "assistant", "content": ""}, None)]

    def token_chunk(
        self, rid: str, new_text: str, tokens: list[int], prompt_tokens: int, finished: bool
    ) -> bytes:
        return self._chunk(rid, {"content": new_text}, None)

    def last_chunks(
        self, rid: str, tokens: list[int], prompt_tokens: int, include_usage: bool, e2e: float
    ) -> list[bytes]:
        out = [self._chunk(rid, {}, "length")]
        if include_usage:
            out.append(self._chunk(rid, {}, None, usage=_usage(prompt_tokens, len(tokens))))
        return out

    def full_response(self, rid: str, tokens: list[int], prompt_tokens: int, e2e: float) -> dict:
        message = {"role": "assistant", "content": detokenize(tokens, at_start=True), "tool_calls": None}
        return {
            "id": rid,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}],
            "usage": _usage(prompt_tokens, len(tokens)),
        }


class _NativeFormat(_Format):
    """sglang /generate: cumulative `text` per chunk, `meta_info` with token counts."""

    def _obj(
        self, rid: str, tokens: list[int], prompt_tokens: int, finished: bool, e2e: float | None
    ) -> dict:
        meta: dict[str, object] = {
            "id": rid,
            "finish_reason": {"type": "length", "length": len(tokens)} if finished else None,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "cached_tokens": 0,
        }
        if e2e is not None:
            meta["e2e_latency"] = e2e
        return {"text": detokenize(tokens, at_start=True), "output_ids": list(tokens), "meta_info": meta}

    def token_chunk(
        self, rid: str, new_text: str, tokens: list[int], prompt_tokens: int, finished: bool
    ) -> bytes:
        return _sse(self._obj(rid, tokens, prompt_tokens, finished, None))

    def full_response(self, rid: str, tokens: list[int], prompt_tokens: int, e2e: float) -> dict:
        return self._obj(rid, tokens, prompt_tokens, True, e2e)
