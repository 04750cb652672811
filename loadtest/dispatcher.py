"""The open-loop dispatcher: one scheduler greenlet per Locust process sends each arrival at its time.

Arrivals never wait for earlier responses. Requests run on a bounded gevent pool; an arrival that
finds the pool full, or that the scheduler reaches too late, is dropped and counted. Each request's
stream is read line by line and measured by `loadtest.stream.StreamMeter`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.pool
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError

from loadtest.records import Clock, build_record
from loadtest.schedule import Arrival
from loadtest.stream import StreamMeter
from loadtest.summary import StageCounters

# Enough of an error body to name the problem in the record, not the whole page.
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme://host:port plus the chat path (any base path of the host is kept)."""

    base_url: str
    path: str

    @classmethod
    def from_host(cls, host: str, chat_path: str) -> Target:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad --host {host!r}: expected http(s)://HOST[:PORT]")
        base = f"{parts.scheme}://{parts.netloc}"
        return cls(base, parts.path.rstrip("/") + "/" + chat_path.lstrip("/"))


@dataclass(frozen=True)
class DispatchSettings:
    worker: int
    max_in_flight: int
    late_s: float
    drop_after_s: float
    request_timeout_s: float
    arm_header: str


def check_reachable(target: Target, timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to the target opens, else a one-line reason."""
    parts = urlsplit(target.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"cannot reach --host {target.base_url}: {exc.strerror or exc}"


class Dispatcher:
    def __init__(
        self,
        *,
        target: Target,
        arrivals: Iterator[Arrival],
        start_perf: float,
        clock: Clock,
        body_for: Callable[[int], Any],
        settings: DispatchSettings,
        on_record: Callable[[dict[str, Any]], None],
        on_dropped: Callable[[str, float], None],
    ) -> None:
        self.target = target
        self.arrivals = arrivals
        self.start_perf = start_perf
        self.clock = clock
        self.body_for = body_for
        self.settings = settings
        self.on_record = on_record
        self.on_dropped = on_dropped
        self.stages: dict[str, StageCounters] = {}
        self.pending: list[dict[str, Any]] = []
        self.in_flight = gevent.pool.Pool(settings.max_in_flight)
        self.client = HTTPClient.from_url(
            target.base_url,
            concurrency=settings.max_in_flight,
            connection_timeout=min(10.0, settings.request_timeout_s),
            network_timeout=settings.request_timeout_s,
        )
        self.schedule_done = gevent.event.Event()
        self._scheduler: gevent.Greenlet | None = None

    # ------------------------------------------------------------------------------- scheduling
    def start(self) -> None:
        self._scheduler = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            for arrival in self.arrivals:
                due = self.start_perf + arrival.offset_s
                delay = due - time.perf_counter()
                if delay > 0:
                    gevent.sleep(delay)
                self._dispatch(arrival, due)
        finally:
            self.schedule_done.set()

    def _dispatch(self, arrival: Arrival, due: float) -> None:
        counters = self.stages.get(arrival.stage)
        if counters is None:
            counters = self.stages[arrival.stage] = StageCounters()
        due_unix = self.clock.to_unix(due)
        counters.scheduled += 1
        counters.first_scheduled_at = min(counters.first_scheduled_at, due_unix)
        counters.last_scheduled_at = max(counters.last_scheduled_at, due_unix)
        late_by = time.perf_counter() - due
        if late_by > self.settings.drop_after_s:
            counters.dropped_too_late += 1
            self.on_dropped("dropped_too_late", late_by)
        elif self.in_flight.full():
            counters.dropped_in_flight += 1
            self.on_dropped("dropped_in_flight", late_by)
        else:
            self.in_flight.spawn(self._send, arrival, due, counters)

    # ---------------------------------------------------------------------------------- sending
    def _send(self, arrival: Arrival, due: float, counters: StageCounters) -> None:
        prepared = self.body_for(arrival.seq)
        meter: StreamMeter | None = None
        status: int | None = None
        arm: Any = None
        error_kind: str | None = None
        error: str | None = None
        sent = time.perf_counter()
        sent_unix = self.clock.to_unix(sent)
        counters.sent += 1
        counters.first_sent_at = min(counters.first_sent_at, sent_unix)
        counters.last_sent_at = max(counters.last_sent_at, sent_unix)
        if sent - due > self.settings.late_s:
            counters.late += 1
        response = None
        try:
            with gevent.Timeout(self.settings.request_timeout_s):
                response = self.client.request(
                    "POST",
                    self.target.path,
                    body=prepared.body,
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                )
                status = response.status_code
                arm = response.get(self.settings.arm_header)
                if status != 200:
                    text = response.read().decode("utf-8", "replace").strip()
                    error_kind, error = "http", f"HTTP {status}: {text[:_ERROR_BODY_CHARS]}"
                else:
                    meter = StreamMeter(sent=sent)
                    while line := response.readline(b"\n"):
                        meter.feed_line(line, time.perf_counter())
                    error_kind, error = meter.outcome()
        except gevent.Timeout:
            error_kind, error = "timeout", f"no complete response within {self.settings.request_timeout_s:g}s"
        except gevent.GreenletExit:
            error_kind, error = "cancelled", "run stopped before the response completed"
            raise
        except (OSError, HTTPParseError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
            error_kind, error = kind, f"{type(exc).__name__}: {exc}"
        finally:
            if response is not None:
                response.release()
            ended = time.perf_counter()
            record = build_record(
                seq=arrival.seq,
                worker=self.settings.worker,
                stage=arrival.stage,
                clock=self.clock,
                scheduled=due,
                sent=sent,
                ended=ended,
                late_s=self.settings.late_s,
                meter=meter,
                status=status,
                arm=arm if isinstance(arm, str) else None,
                error_kind=error_kind,
                error=error,
                images=prepared.images,
                request_bytes=len(prepared.body),
            )
            self.pending.append(record)
            self.on_record(record)

    # ----------------------------------------------------------------------------- collecting
    def take_records(self) -> list[dict[str, Any]]:
        records, self.pending = self.pending, []
        return records

    def counters_wire(self) -> dict[str, dict[str, Any]]:
        return {name: counters.to_wire() for name, counters in self.stages.items()}

    def wait_schedule_done(self, timeout_s: float | None = None) -> bool:
        return self.schedule_done.wait(timeout_s)

    def finish(self, drain_timeout_s: float) -> None:
        """Stop scheduling, give in-flight requests `drain_timeout_s` to complete, cancel the rest."""
        if self._scheduler is not None:
            self._scheduler.kill(block=True)
        self.in_flight.join(timeout=drain_timeout_s)
        self.in_flight.kill(block=True, timeout=5)
        self.client.close()
