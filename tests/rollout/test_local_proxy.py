"""The local weighted proxy as a real process in front of two stand-in SSE upstreams."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import aiohttp
import pytest

from infra.net import free_port
from rollout.processes import is_alive, terminate
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights
from rollout.routers.local import LocalProxyRouter

pytestmark = pytest.mark.integration


async def _stream(session, url, *, chunks=3, delay_ms=0):
    """One streamed request of `chunks` tokens, each `delay_ms` after the last (the first too): (arm header,
    arms named in the token events, their arrival times, status)."""
    pace = {"x-stub-ttft-ms": str(delay_ms), "x-stub-itl-ms": str(delay_ms)}
    body = {"max_tokens": chunks, "stream": True}
    async with session.post(url + "/v1/chat/completions", json=body, headers=pace) as resp:
        arms, times = [], []
        async for line in resp.content:
            if line.startswith(b"data: {"):
                event = json.loads(line[6:])
                if any(c["delta"].get("content") for c in event.get("choices", [])):
                    arms.append(event["arm"])
                    times.append(time.monotonic())
        return resp.headers.get("x-canary-arm"), arms, times, resp.status


def test_weights_split_exactly_and_header_names_the_serving_arm(local_proxy):
    spec, _ = local_proxy
    router = LocalProxyRouter(admin_url=spec.admin_url)
    router.set_weights(Weights(90, 10))
    assert router.get_weights() == Weights(90, 10)
    assert router.verify_weights(Weights(90, 10)).check is WeightCheck.MATCHES
    assert router.verify_weights(Weights(50, 50)).check is WeightCheck.DIFFERS

    async def run():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(_stream(session, spec.url, chunks=1) for _ in range(100)))

    results = asyncio.run(run())
    assert Counter(header for header, _, _, _ in results) == {"baseline": 90, "canary": 10}
    for header, arms, _, status in results:
        assert status == 200 and arms == [header]


def test_sse_streams_unbuffered(local_proxy):
    spec, _ = local_proxy

    async def run():
        async with aiohttp.ClientSession() as session:
            return await _stream(session, spec.url, chunks=3, delay_ms=400)

    _, arms, times, _ = asyncio.run(run())
    assert len(arms) == 3
    # Each event reaches the client as the upstream sends it, ~400 ms apart, not all at the end.
    assert times[1] - times[0] > 0.25 and times[2] - times[1] > 0.25


def test_weight_change_keeps_in_flight_requests_on_their_arm_and_loses_none(local_proxy):
    spec, _ = local_proxy
    router = LocalProxyRouter(admin_url=spec.admin_url)

    async def run():
        async with aiohttp.ClientSession() as session:
            # Long streams started at 100% baseline, then traffic flips while they are in flight.
            slow = [
                asyncio.create_task(_stream(session, spec.url, chunks=4, delay_ms=250)) for _ in range(10)
            ]
            await asyncio.sleep(0.3)
            steady = []
            for weights in ((50, 50), (0, 100), (90, 10), (100, 0)):
                await asyncio.to_thread(router.set_weights, Weights(*weights))
                steady += await asyncio.gather(*(_stream(session, spec.url, chunks=2) for _ in range(20)))
            return await asyncio.gather(*slow), steady

    slow, steady = asyncio.run(run())
    for header, arms, _, status in slow:
        assert (header, status, arms) == ("baseline", 200, ["baseline"] * 4)
    assert all(
        status == 200 and len(arms) == 2 and arms == [header] * 2 for header, arms, _, status in steady
    )
    assert Counter(h for h, _, _, _ in steady[20:40]) == {"canary": 20}


def test_metrics_count_requests_per_arm_and_show_weights(local_proxy):
    spec, _ = local_proxy
    router = LocalProxyRouter(admin_url=spec.admin_url)
    router.set_weights(Weights(50, 50))

    async def run():
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(_stream(session, spec.url, chunks=1) for _ in range(10)))

    asyncio.run(run())
    text = urllib.request.urlopen(spec.admin_url + "/metrics", timeout=5).read().decode()
    assert 'router_requests_total{arm="baseline",code="200"} 5.0' in text
    assert 'router_requests_total{arm="canary",code="200"} 5.0' in text
    assert 'router_traffic_weight_percent{arm="canary"} 50.0' in text
    assert 'router_request_duration_seconds_count{arm="canary"} 5.0' in text


def test_bad_weights_are_refused_with_the_bad_value_named_and_change_nothing(local_proxy):
    spec, _ = local_proxy
    router = LocalProxyRouter(admin_url=spec.admin_url)
    request = urllib.request.Request(
        spec.admin_url + "/admin/weights",
        data=json.dumps({"baseline": 70, "canary": 20}).encode(),
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400 and b"must sum to 100" in info.value.read()
    assert router.get_weights() == Weights(100, 0)


def test_dead_upstream_gives_502_with_arm_header_and_counts_it(start_proxy):
    spec, _ = start_proxy(Weights(0, 100), canary_url=f"http://127.0.0.1:{free_port()}")  # nobody listens
    request = urllib.request.Request(spec.url + "/v1/chat/completions", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 502 and info.value.headers["x-canary-arm"] == "canary"
    assert b"unreachable" in info.value.read()
    text = urllib.request.urlopen(spec.admin_url + "/metrics", timeout=5).read().decode()
    assert 'router_requests_total{arm="canary",code="502"} 1.0' in text


def test_unreachable_router_is_unknown_to_verify_and_an_error_to_set():
    router = LocalProxyRouter(admin_url="http://127.0.0.1:9", timeout_s=1)
    assert router.verify_weights(Weights(100, 0)).check is WeightCheck.UNKNOWN
    with pytest.raises(RouterUnavailable, match="unreachable"):
        router.set_weights(Weights(100, 0))


def test_proxy_process_runs_in_its_own_session(local_proxy):
    import os

    _, ref = local_proxy
    assert is_alive(ref)
    assert os.getsid(ref.pid) == ref.pid  # survives the orchestrator's death and signals to its group


def test_rollback_restarts_a_dead_proxy_on_its_ports_at_the_new_weights(start_proxy, tmp_path):
    import os
    import signal as signals

    spec, ref = start_proxy(Weights(50, 50))
    router = LocalProxyRouter.for_process(spec, ref, tmp_path / "proxy.log")
    os.killpg(ref.pid, signals.SIGKILL)
    try:
        assert router.verify_weights(Weights(50, 50)).check is WeightCheck.UNKNOWN
        router.set_weights(Weights(100, 0))
        assert router.process != ref and is_alive(router.process)
        assert router.get_weights() == Weights(100, 0)
        request = urllib.request.Request(
            spec.url + "/v1/chat/completions", data=b'{"max_tokens": 1}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.headers["x-canary-arm"] == "baseline"
        assert router.describe()["process"] == router.process.as_dict()  # what the state will record
    finally:
        terminate(router.process)
