import http.server
import threading

import pytest

from infra.net import free_port, wait_http_ok


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname() == ("127.0.0.1", port)


class _ReadyAfter(http.server.BaseHTTPRequestHandler):
    """503 for the first `unready` requests, then 200."""

    unready = 0
    asked = 0

    def do_GET(self) -> None:
        type(self).asked += 1
        self.send_response(503 if type(self).asked <= type(self).unready else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _serve(unready: int):
    handler = type("Handler", (_ReadyAfter,), {"unready": unready, "asked": 0})
    server = http.server.HTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_wait_http_ok_returns_once_server_answers():
    server, handler = _serve(unready=3)
    try:
        wait_http_ok(f"http://127.0.0.1:{server.server_port}/", timeout_s=5, interval_s=0.01)
    finally:
        server.shutdown()
    assert handler.asked == 4  # three 503s polled through, returned on the first 200


def test_wait_http_ok_names_the_last_answer_when_it_times_out():
    server, _ = _serve(unready=10**6)
    try:
        with pytest.raises(TimeoutError, match="HTTP 503"):
            wait_http_ok(f"http://127.0.0.1:{server.server_port}/", timeout_s=0.3, interval_s=0.01)
    finally:
        server.shutdown()


def test_wait_http_ok_times_out_with_reason():
    with pytest.raises(TimeoutError, match="not ready"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/", timeout_s=0.3)


def test_wait_http_ok_fails_fast_when_process_died():
    with pytest.raises(RuntimeError, match="exited before it became ready"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/", timeout_s=30, alive=lambda: False)
