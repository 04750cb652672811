import http.server
import threading

import pytest

from infra.net import free_port, wait_http_ok


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_http_ok_returns_once_server_answers():
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/", timeout_s=5)
    finally:
        server.shutdown()


def test_wait_http_ok_times_out_with_reason():
    with pytest.raises(TimeoutError, match="not ready"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/", timeout_s=0.3)


def test_wait_http_ok_fails_fast_when_process_died():
    with pytest.raises(RuntimeError, match="exited before it became ready"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/", timeout_s=30, alive=lambda: False)
