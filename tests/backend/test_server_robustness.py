"""Bad input, rehearsal faults, graceful SIGTERM and a crashed rank, against real TP=2 servers."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import psutil
import pytest
from backend_testlib import (
    MODEL,
    REPO,
    Server,
    chat_body,
    free_port,
    image_data_url,
    metric_samples,
    oversized_png_data_url,
    request,
    running_server,
    sample_value,
    stream,
    wait_until,
)

from testkit.processes import stop

pytestmark = pytest.mark.integration


def _bad_and_good_requests() -> list[tuple[str, object, int]]:
    """(path, body, expected status) covering every kind of bad input next to good ones."""
    good_image = image_data_url(64, 48)
    undecodable = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUg" + "A" * 40
    return [
        ("/v1/chat/completions", chat_body(images=(good_image,), max_tokens=3), 200),
        ("/v1/chat/completions", chat_body(images=(undecodable,), max_tokens=3), 400),
        ("/v1/chat/completions", chat_body(images=(good_image, "not base64 !!"), max_tokens=3), 400),
        ("/v1/chat/completions", chat_body(images=(oversized_png_data_url(),), max_tokens=3), 413),
        ("/v1/chat/completions", b'{"model": "test-vlm", "messages": [', 400),
        ("/v1/chat/completions", {**chat_body(max_tokens=3), "model": "any-name"}, 200),  # as sglang
        ("/v1/chat/completions", {**chat_body(max_tokens=3), "model": ["a"]}, 400),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "x"}]}]},
            400,
        ),
        ("/v1/chat/completions", {**chat_body(), "max_tokens": -2}, 400),
        ("/v1/chat/completions", chat_body(text="just text", max_tokens=3), 200),
        (
            "/generate",
            {"text": "x", "image_data": undecodable, "sampling_params": {"max_new_tokens": 2}},
            400,
        ),
        ("/generate", {"text": "x", "image_data": good_image, "sampling_params": {"max_new_tokens": 2}}, 200),
        ("/v1/chat/completions", chat_body(images=("/nonexistent/file.png",), max_tokens=3), 400),
    ]


def test_mixed_good_and_bad_requests_keep_ranks_in_step(server: Server):
    """A long concurrent stream of good and bad requests: each gets its own answer, nothing hangs."""
    cases = _bad_and_good_requests() * 6  # 72 requests
    errors_before = metric_samples(server.url)

    def send(case):
        path, body, expected = case
        status, payload = request(server.url + path, body, timeout=60)
        return expected, status, payload

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(send, cases))
    for expected, status, payload in results:
        assert status == expected, payload
        if status >= 400:  # OpenAI-style error envelope, as sglang answers
            assert payload["object"] == "error" and payload["code"] == status, payload
            assert isinstance(payload["message"], str) and payload["message"]
    # The group is still in step: the next good request succeeds and every rank is alive.
    status, body = request(
        server.url + "/v1/chat/completions", chat_body(images=(image_data_url(),), max_tokens=4)
    )
    assert status == 200 and body["usage"]["completion_tokens"] == 4
    assert request(server.url + "/health_generate")[0] == 200
    assert len(server.rank_pids()) == 2
    after = metric_samples(server.url)
    n_400 = sum(1 for e, _, _ in results if e == 400)
    grew = sample_value(after, "backend_request_errors_total", code="400") - _value_or_zero(
        errors_before, "backend_request_errors_total", code="400"
    )
    assert grew == n_400


def _value_or_zero(samples, name, **labels) -> float:
    try:
        return sample_value(samples, name, **labels)
    except AssertionError:
        return 0.0


def test_rehearsal_faults_leak_errors_latency_and_cpu(server: Server):
    url = server.url
    status, faults = request(url + "/rehearsal/faults")
    assert status == 200 and faults == {
        "leak_kib_per_request": 0.0, "extra_latency_ms": 0.0, "error_ratio": 0.0, "cpu_burn_ms": 0.0,
        "reset_ratio": 0.0,
    }  # fmt: skip
    status, err = request(url + "/rehearsal/faults", {"leak_kib": 1})
    assert status == 400 and "leak_kib" in err["message"]
    status, err = request(url + "/rehearsal/faults", {"error_ratio": 2})
    assert status == 400 and "error_ratio" in err["message"]
    try:
        # Leak: every scheduler rank retains 4 MiB per request; RSS grows by at least most of it.
        before = metric_samples(url)
        rss0 = {r: sample_value(before, "backend_process_resident_memory_bytes", rank=r) for r in ("0", "1")}
        assert request(url + "/rehearsal/faults", {"leak_kib_per_request": 4096})[0] == 200
        for _ in range(10):
            assert request(url + "/v1/chat/completions", chat_body(max_tokens=2))[0] == 200
        after = metric_samples(url)
        for rank in ("0", "1"):
            grown = sample_value(after, "backend_process_resident_memory_bytes", rank=rank) - rss0[rank]
            assert grown >= 0.8 * 10 * 4 * 2**20, (rank, grown)

        # Error ratio 1: every generation request is a 500 with an error body; 0 restores service.
        assert request(url + "/rehearsal/faults", {"leak_kib_per_request": 0, "error_ratio": 1.0})[0] == 200
        for _ in range(3):
            status, body = request(url + "/v1/chat/completions", chat_body(max_tokens=2))
            assert status == 500 and "rehearsal fault" in body["message"]
        assert sample_value(metric_samples(url), "backend_request_errors_total", code="500") >= 3

        # Extra latency shows in end-to-end latency, client side and in sglang's histogram.
        assert request(url + "/rehearsal/faults", {"error_ratio": 0, "extra_latency_ms": 400})[0] == 200
        m0 = metric_samples(url)
        t0 = time.perf_counter()
        assert request(url + "/v1/chat/completions", chat_body(max_tokens=2))[0] == 200
        assert time.perf_counter() - t0 >= 0.4
        m1 = metric_samples(url)
        e2e = "sglang:e2e_request_latency_seconds_sum"
        assert (
            sample_value(m1, e2e, is_streaming="false") - sample_value(m0, e2e, is_streaming="false") >= 0.4
        )

        # CPU burn: each rank burns about 150 ms of CPU per request (fixed work; allow contention slack).
        assert request(url + "/rehearsal/faults", {"extra_latency_ms": 0, "cpu_burn_ms": 150})[0] == 200
        cpu0 = {r: sample_value(m1, "backend_process_cpu_seconds_total", rank=r) for r in ("0", "1")}
        for _ in range(4):
            assert request(url + "/v1/chat/completions", chat_body(max_tokens=2))[0] == 200
        m2 = metric_samples(url)
        for rank in ("0", "1"):
            assert sample_value(m2, "backend_process_cpu_seconds_total", rank=rank) - cpu0[rank] >= 0.25, rank
    finally:
        request(url + "/rehearsal/faults", {"leak_kib_per_request": 0, "extra_latency_ms": 0, "error_ratio": 0,
                                            "cpu_burn_ms": 0})  # fmt: skip


def test_reset_fault_drops_connections_unseen_by_sglang_metrics(server: Server):
    """A reset request gets no response at all, and sglang's counters (requests, aborts) do not move: only a
    client or a gateway in front can see it."""
    url = server.url
    counters = ("sglang:num_requests_total", "sglang:num_aborted_requests_total")
    totals0 = [sample_value(metric_samples(url), name) for name in counters]
    host = urlparse(url)
    assert request(url + "/rehearsal/faults", {"reset_ratio": 1.0})[0] == 200
    try:
        for _ in range(3):
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
            with pytest.raises((ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
                conn.request("POST", "/v1/chat/completions", json.dumps(chat_body(max_tokens=2)),
                             {"content-type": "application/json"})  # fmt: skip
                conn.getresponse()
            conn.close()
        after = metric_samples(url)
        assert [sample_value(after, name) for name in counters] == totals0
    finally:
        assert request(url + "/rehearsal/faults", {"reset_ratio": 0})[0] == 200
    assert request(url + "/v1/chat/completions", chat_body(max_tokens=2))[0] == 200


def test_idle_connections_close_after_sglangs_keep_alive(tmp_path):
    """SGLANG_TIMEOUT_KEEP_ALIVE as sglang reads it: an idle client connection is closed by the server after
    that many seconds, and kept before."""
    env = {"SGLANG_TIMEOUT_KEEP_ALIVE": "1"}
    with running_server(tmp_path, "--tp-size", "1", env=env) as server:
        host = urlparse(server.url)
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        for idle_s in (0.2, 0.2):
            conn.request("GET", "/v1/models")
            assert conn.getresponse().read()
            time.sleep(idle_s)  # well within the keep-alive: the same connection serves the next request
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        time.sleep(2.0)  # past it: the server has closed the connection
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            conn.request("GET", "/v1/models")
            conn.getresponse()
        conn.close()


def test_initial_faults_from_flags_and_sigterm_drains_in_flight_stream(tmp_path):
    args = (
        "--tp-size",
        "2",
        "--step-cost-ms",
        "2",
        "--fault-extra-latency-ms",
        "50",
        "--max-running-requests",
        "1",
    )
    with running_server(tmp_path, *args) as srv:
        assert request(srv.url + "/rehearsal/faults")[1]["extra_latency_ms"] == 50
        result: dict = {}
        # Long enough to still be streaming when SIGTERM lands (each step also yields to the other rank).
        body = chat_body(images=(image_data_url(),), max_tokens=1000, stream=True)
        reader = threading.Thread(
            target=lambda: result.update(out=stream(srv.url + "/v1/chat/completions", body))
        )
        reader.start()
        wait_until(
            lambda: sample_value(metric_samples(srv.url), "sglang:num_running_reqs", tp_rank="0") >= 1,
            30,
            what="the stream to be running",
        )
        # Saturated (one running slot, taken): health still answers at once, from the scheduler's
        # activity, instead of queueing its probe behind the stream (as sglang's /health_generate).
        t0 = time.perf_counter()
        assert request(srv.url + "/health_generate")[0] == 200
        assert time.perf_counter() - t0 < 2.0
        assert result.get("out") is None  # the stream was still running meanwhile
        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: request(srv.url + "/ready")[0] == 503, 10, what="/ready to turn 503")
        assert request(srv.url + "/health")[0] == 503
        refused = request(srv.url + "/v1/chat/completions", chat_body(max_tokens=2))
        assert refused[0] == 503 and refused[1]["object"] == "error"
        reader.join(60)
        assert srv.proc.wait(60) == 0, srv.log()
        status, events = result["out"]
        assert status == 200 and events[-1] == "[DONE]"
        tokens = [e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")]
        assert len(tokens) == 1000  # the drain let it finish


def test_crashed_rank_fails_health_and_exits_non_zero(tmp_path):
    with running_server(tmp_path, "--tp-size", "2") as srv:
        pids = srv.rank_pids()
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)
        codes: list[int] = []

        def unhealthy() -> bool:
            try:
                codes.append(request(srv.url + "/health", timeout=5)[0])
            except OSError:
                codes.append(-1)  # already gone
            return codes[-1] != 200

        wait_until(unhealthy, 15, what="/health to fail")
        assert srv.proc.wait(30) != 0, srv.log()
        assert "scheduler rank 1" in srv.log()
        wait_until(lambda: not _live_group_members(srv.proc.pid), 15, what="rank 0 to be stopped too")


def test_client_disconnect_aborts_the_request_on_every_rank(server: Server):
    """A stream dropped by its client leaves the running batch at once (sglang counts it as aborted)."""
    labels = {"model_name": MODEL, "engine_type": "unified"}
    aborted0 = sample_value(metric_samples(server.url), "sglang:num_aborted_requests_total", **labels)
    target = urlparse(server.url)
    conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
    body = chat_body(max_tokens=100_000, stream=True)  # would run for minutes if not aborted
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(5):
        assert resp.readline()  # a few SSE lines arrive: it is running
    conn.sock.shutdown(2)
    conn.close()

    def settled() -> bool:
        m = metric_samples(server.url)
        return (
            sample_value(m, "sglang:num_running_reqs", tp_rank="0") == 0
            and sample_value(m, "sglang:num_aborted_requests_total", **labels) == aborted0 + 1
        )

    wait_until(settled, 20, interval=0.3, what="the dropped stream to be aborted")
    assert request(server.url + "/v1/chat/completions", chat_body(max_tokens=3))[0] == 200


def test_sigterm_while_starting_exits_zero(tmp_path):
    """A pod deleted during its slow start-up must not die with 143 nor leave ranks behind."""
    log = open(tmp_path / "early.log", "wb")  # noqa: SIM115 - closed below
    cmd = [
        sys.executable,
        "-m",
        "backend",
        "--model-path",
        MODEL,
        "--tp-size",
        "2",
        "--port",
        str(free_port()),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(1.0)  # inside the imports or the rank start-up, depending on the machine
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "early.log").read_text()
        wait_until(lambda: not _live_group_members(proc.pid), 10, what="no rank left behind")
    finally:
        stop(proc, grace_s=0, group=True)
        log.close()


def _live_group_members(pgid: int) -> list[int]:
    """Processes of the server's process group that are still running (zombies excluded)."""
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members
