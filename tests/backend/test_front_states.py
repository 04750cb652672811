"""The HTTP front on its own (no scheduler ranks started): what clients see while a server is starting
or draining, and the request-level checks that never reach the ranks."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from backend.config import parse_config
from backend.http_server import BackendServer


def _run(scenario) -> None:
    async def main() -> None:
        server = BackendServer(parse_config(["--model-path", "m", "--port", "30001", "--enable-metrics"]))
        client = TestClient(TestServer(server.app))
        await client.start_server()
        try:
            await scenario(server, client)
        finally:
            await client.close()
            await server.engine.shutdown(timeout_s=1)

    asyncio.run(main())


def test_starting_server_is_not_ready_and_refuses_generation():
    async def scenario(server: BackendServer, client: TestClient) -> None:
        for path in ("/ready", "/health", "/health_generate"):
            assert (await client.get(path)).status == 503, path
        resp = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
        body = await resp.json()
        assert resp.status == 503 and body["object"] == "error" and "starting" in body["message"]
        info = await (await client.get("/server_info")).json()
        assert info["status"] == "starting"
        # Bad input is refused before the ranks are involved, starting or not.
        resp = await client.post("/generate", data=b"{not json")
        assert resp.status == 400 and (await resp.json())["code"] == 400

    _run(scenario)


def test_draining_server_is_not_ready():
    async def scenario(server: BackendServer, client: TestClient) -> None:
        server.engine.ready.set()  # as if the ranks had started
        assert (await client.get("/ready")).status == 200
        server.draining = True
        assert (await client.get("/ready")).status == 503
        assert (await client.get("/health")).status == 503
        resp = await client.post("/generate", json={"text": "x"})
        assert resp.status == 503 and "shutting down" in (await resp.json())["message"]
        assert (await (await client.get("/server_info")).json())["status"] == "draining"

    _run(scenario)


def test_oversized_body_is_a_413_error_body():
    async def scenario(server: BackendServer, client: TestClient) -> None:
        server.engine.ready.set()
        big = b'{"text": "' + b"a" * (server.cfg.max_request_bytes + 10) + b'"}'
        resp = await client.post("/generate", data=big)
        body = await resp.json()
        assert resp.status == 413 and body["object"] == "error" and "exceeds" in body["message"]

    _run(scenario)
