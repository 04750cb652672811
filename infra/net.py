"""Loopback ports and readiness waits for processes this project starts on one machine."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, timeout_s: float, *, interval_s: float = 0.1, alive=None) -> None:
    """Poll `url` until it answers 2xx.

    `alive`, if given, is called between polls; it returns False (or raises) when the process that
    should answer has died, so a crashed server fails fast instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"process serving {url} exited before it became ready ({last_error})")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
                last_error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(interval_s)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s: {last_error}")
