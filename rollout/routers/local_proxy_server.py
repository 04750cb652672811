"""The local weighted reverse proxy: `python -m rollout.routers.local_proxy_server`.

Each new request is assigned an arm by smooth weighted round-robin (exact proportions, no sampling noise
at 10%), forwarded there, and streamed back chunk by chunk as it arrives (SSE passes unbuffered). The arm
is fixed when the request arrives, so a weight change never moves or drops an in-flight request.
The admin listener (loopback only) serves `GET|PUT /admin/weights`, `/healthz` and the router's own
`/metrics`; the traffic listener forwards every path, `/metrics` included, to an arm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rollout.routers.base import ARMS, Weights

ARM_HEADER = "x-canary-arm"
# Headers that describe one hop, not the message; aiohttp sets its own framing headers.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
log = logging.getLogger("rollout.proxy")
UPSTREAM_IDLE_TIMEOUT_S = 3.0  # below the shortest keep-alive of the servers behind (sglang: 5 s)


class WeightedPicker:
    """Smooth weighted round-robin (as in nginx): over any 100 picks each arm gets exactly its percent."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
        self._credit = dict.fromkeys(ARMS, 0)

    def set(self, weights: Weights) -> None:
        self.weights = weights
        self._credit = dict.fromkeys(ARMS, 0)

    def pick(self) -> str:
        for arm in ARMS:
            self._credit[arm] += getattr(self.weights, arm)
        best = max(ARMS, key=lambda arm: self._credit[arm])
        self._credit[best] -= 100
        return best


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "router_requests", "Requests by arm and status code", ["arm", "code"], registry=self.registry
        )
        self.duration = Histogram(
            "router_request_duration_seconds",
            "Request duration through the router, to the last streamed byte",
            ["arm"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.weight = Gauge(
            "router_traffic_weight_percent", "Configured traffic weight", ["arm"], registry=self.registry
        )
        self.inflight = Gauge(
            "router_inflight_requests", "Requests in flight", ["arm"], registry=self.registry
        )

    def show_weights(self, weights: Weights) -> None:
        for arm in ARMS:
            self.weight.labels(arm=arm).set(getattr(weights, arm))


class WeightedProxy:
    def __init__(self, *, upstreams: dict[str, str], weights: Weights) -> None:
        self.upstreams = {arm: url.rstrip("/") for arm, url in upstreams.items()}
        self.picker = WeightedPicker(weights)
        self.metrics = RouterMetrics()
        self.metrics.show_weights(weights)
        self.generation = 0
        self.session: aiohttp.ClientSession | None = None

    async def start_session(self, _app: web.Application | None = None) -> None:
        # No total timeout: streams may be long; the client decides when to give up. Idle connections to
        # the arms are dropped before sglang's 5 s keep-alive closes them (SGLANG_TIMEOUT_KEEP_ALIVE): a
        # request sent on a connection the server is closing fails without a response, and POSTs are not
        # retried.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_IDLE_TIMEOUT_S),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )

    async def close_session(self, _app: web.Application | None = None) -> None:
        if self.session is not None:
            await self.session.close()

    def set_weights(self, weights: Weights) -> None:
        self.picker.set(weights)
        self.metrics.show_weights(weights)
        self.generation += 1
        log.info("weights now baseline=%d canary=%d", weights.baseline, weights.canary)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        arm = self.picker.pick()  # fixed for this request's lifetime, whatever the weights do next
        started = time.monotonic()
        outcome = {"code": "502"}
        self.metrics.inflight.labels(arm=arm).inc()
        try:
            return await self._forward_to(arm, request, outcome)
        finally:
            self.metrics.inflight.labels(arm=arm).dec()
            self.metrics.requests.labels(arm=arm, code=outcome["code"]).inc()
            self.metrics.duration.labels(arm=arm).observe(time.monotonic() - started)

    async def _forward_to(
        self, arm: str, request: web.Request, outcome: dict[str, str]
    ) -> web.StreamResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = self.upstreams[arm] + request.rel_url.path_qs
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            outcome["code"] = "502"
            return web.json_response(
                {"error": f"router: {arm} upstream {self.upstreams[arm]} unreachable: {exc}"},
                status=502,
                headers={ARM_HEADER: arm},
            )
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            if upstream.content_length is not None and "Content-Encoding" not in upstream.headers:
                response.content_length = upstream.content_length
            response.headers[ARM_HEADER] = arm
            outcome["code"] = str(upstream.status)
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                outcome["code"] = "502"  # the arm broke the stream after the status line went out
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                outcome["code"] = "499"  # the client went away (nginx's convention)
            return response


def build_apps(proxy: WeightedProxy) -> tuple[web.Application, web.Application]:
    traffic = web.Application(client_max_size=256 * 1024 * 1024)
    traffic.router.add_route("*", "/{tail:.*}", proxy.forward)
    traffic.on_startup.append(proxy.start_session)
    traffic.on_cleanup.append(proxy.close_session)

    async def get_weights(_request: web.Request) -> web.Response:
        return web.json_response({**proxy.picker.weights.as_dict(), "generation": proxy.generation})

    async def put_weights(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            weights = Weights.from_dict(data)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad weights: {exc}"}, status=400)
        proxy.set_weights(weights)
        return web.json_response({**weights.as_dict(), "generation": proxy.generation})

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(proxy.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "upstreams": proxy.upstreams})

    admin = web.Application()
    admin.router.add_get("/admin/weights", get_weights)
    admin.router.add_put("/admin/weights", put_weights)
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", healthz)
    return traffic, admin


def parse_weights(text: str) -> Weights:
    try:
        baseline, canary = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights {text!r}: expected BASELINE,CANARY e.g. 90,10") from None
    try:
        return Weights(baseline=baseline, canary=canary)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--weights {text!r}: {exc}") from None


async def serve(args: argparse.Namespace) -> None:
    proxy = WeightedProxy(upstreams={"baseline": args.baseline, "canary": args.canary}, weights=args.weights)
    traffic, admin = build_apps(proxy)
    runners = [
        web.AppRunner(traffic, access_log=None, shutdown_timeout=10.0),
        web.AppRunner(admin, access_log=None, shutdown_timeout=1.0),
    ]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], args.host, args.port).start()
    await web.TCPSite(runners[1], "127.0.0.1", args.admin_port).start()
    log.info(
        "routing %s:%d (admin 127.0.0.1:%d) to %s", args.host, args.port, args.admin_port, proxy.upstreams
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Stop accepting, let in-flight streams finish (bounded), then exit.
    for runner in runners:
        await runner.shutdown()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True, help="loopback-only admin and /metrics")
    parser.add_argument("--baseline", required=True, help="baseline arm base URL")
    parser.add_argument("--canary", required=True, help="canary arm base URL")
    parser.add_argument("--weights", type=parse_weights, default=Weights(100, 0), help="BASELINE,CANARY")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s proxy %(message)s")
    asyncio.run(serve(args))
    print(json.dumps({"stopped": True}))


if __name__ == "__main__":
    main()
