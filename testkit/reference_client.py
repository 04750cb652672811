"""A reference open-loop client in asyncio + aiohttp, written the way sglang's bench_serving sends.

It sends the same seeded schedule and the same bodies as the Locust generator and measures with the
same stream meter, so `bench.loadtest` can put the two side by side against one endpoint. Unlike
bench_serving (which sleeps each gap relative to the previous send, so delays accumulate), arrivals
are kept on the absolute schedule, the way the Locust dispatcher keeps them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp

from loadtest.payloads import PreparedBody
from loadtest.records import Clock, build_record
from loadtest.schedule import Arrival
from loadtest.stream import StreamMeter
from loadtest.summary import StageCounters

_START_LEAD_S = 0.5


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    arrival: Arrival,
    due: float,
    prepared: PreparedBody,
    clock: Clock,
    counters: StageCounters,
    arm_header: str,
    late_s: float,
) -> dict[str, Any]:
    meter: StreamMeter | None = None
    status = None
    arm = None
    error_kind = error = None
    sent = time.perf_counter()
    counters.sent += 1
    counters.first_sent_at = min(counters.first_sent_at, clock.to_unix(sent))
    counters.last_sent_at = max(counters.last_sent_at, clock.to_unix(sent))
    try:
        async with session.post(
            url, data=prepared.body, headers={"Content-Type": "application/json"}
        ) as response:
            status = response.status
            arm = response.headers.get(arm_header)
            if status != 200:
                error_kind, error = "http", f"HTTP {status}: {(await response.text())[:200]}"
            else:
                meter = StreamMeter(sent=sent)
                async for line in response.content:
                    meter.feed_line(line, time.perf_counter())
                error_kind, error = meter.outcome()
    except TimeoutError:
        error_kind, error = "timeout", "request timed out"
    except aiohttp.ClientError as exc:
        error_kind, error = "connection", f"{type(exc).__name__}: {exc}"
    return build_record(
        seq=arrival.seq,
        worker=0,
        stage=arrival.stage,
        clock=clock,
        scheduled=due,
        sent=sent,
        ended=time.perf_counter(),
        late_s=late_s,
        meter=meter,
        status=status,
        arm=arm,
        error_kind=error_kind,
        error=error,
        images=prepared.images,
        request_bytes=len(prepared.body),
    )


async def run_reference(
    *,
    url: str,
    arrivals: Iterator[Arrival],
    duration_s: float,
    body_for: Callable[[int], PreparedBody],
    max_in_flight: int = 256,
    arm_header: str = "x-canary-arm",
    late_s: float = 0.010,
    timeout_s: float = 300.0,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Send every arrival before `duration_s`; returns (records, stage counters as the summary takes them)."""
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    stages: dict[str, StageCounters] = {}
    tasks: list[asyncio.Task] = []
    in_flight = 0

    def finished(_: asyncio.Task) -> None:
        nonlocal in_flight
        in_flight -= 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clock = Clock.now()
        start = time.perf_counter() + _START_LEAD_S
        for arrival in arrivals:
            if arrival.offset_s >= duration_s:
                break
            due = start + arrival.offset_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            counters = stages.setdefault(arrival.stage, StageCounters())
            counters.scheduled += 1
            counters.first_scheduled_at = min(counters.first_scheduled_at, clock.to_unix(due))
            counters.last_scheduled_at = max(counters.last_scheduled_at, clock.to_unix(due))
            if in_flight >= max_in_flight:
                counters.dropped_in_flight += 1
                continue
            in_flight += 1
            task = asyncio.create_task(
                _send(session, url, arrival, due, body_for(arrival.seq), clock, counters, arm_header, late_s)
            )
            task.add_done_callback(finished)
            tasks.append(task)
        records = list(await asyncio.gather(*tasks))
    for record in records:
        if record["late"]:
            stages[record["stage"]].late += 1
    return records, {name: c.to_wire() for name, c in stages.items()}
