"""Starting real backend servers for tests, and small HTTP helpers (stdlib only, so failures are plain)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from PIL import Image

from infra.net import free_port
from testkit.processes import serving

REPO = Path(__file__).resolve().parents[2]
MODEL = "test-vlm"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rank_pids(self) -> list[int]:
        """Pids of the scheduler rank processes (the front's spawned children, not the spawn helper)."""
        kids = psutil.Process(self.proc.pid).children()
        return [p.pid for p in kids if "spawn_main" in " ".join(p.cmdline())]


@contextlib.contextmanager
def running_server(
    tmp_path: Path, *args: str, ready_timeout: float = 120.0, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A real `python -m backend` on a free loopback port; always stopped (SIGTERM, then SIGKILL to what is
    left of its process group) after."""
    port = free_port()
    log_path = tmp_path / f"backend-{port}.log"
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "backend", "--model-path", MODEL, "--host", "127.0.0.1", "--port", str(port),
           "--enable-metrics", *args]  # fmt: skip
    with serving(
        cmd, url + "/ready", log_path, timeout_s=ready_timeout, interval_s=0.2, grace_s=30.0, env=env
    ) as proc:
        yield Server(url, proc, log_path)


def request(url: str, body: object | bytes | None = None, *, method: str | None = None, timeout: float = 60):
    """(status, parsed JSON or text) of one request; HTTP errors are returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def stream(url: str, body: dict, timeout: float = 60) -> tuple[int, list]:
    """(status, SSE payloads) of a streaming request: parsed JSON objects, and the string "[DONE]"."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    events: list = []
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            for line in resp:
                line = line.strip()
                if line.startswith(b"data: "):
                    payload = line[len(b"data: ") :].decode()
                    events.append(payload if payload == "[DONE]" else json.loads(payload))
            return resp.status, events
    except urllib.error.HTTPError as exc:
        return exc.code, [json.loads(exc.read())]


def image_data_url(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, fmt)
    mime = "png" if fmt == "PNG" else "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def oversized_png_data_url(width: int = 10000, height: int = 10000) -> str:
    """A PNG whose header claims width x height pixels: refused by size before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def chat_body(text: str = "Describe the image.", images: tuple[str, ...] = (), max_tokens: int = 8, **extra):
    content: list[dict] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }


def metric_samples(server_url: str) -> dict[str, list]:
    """Exposition parsed with prometheus_client's parser: family name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = request(server_url + "/metrics")
    assert status == 200, text
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def sample_value(samples: dict[str, list], sample_name: str, **labels: str) -> float:
    """Sum of the samples called `sample_name` whose labels include `labels`."""
    total = 0.0
    found = False
    for family in samples.values():
        for s in family:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    assert found, f"no sample {sample_name} with labels {labels}"
    return total


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
