"""The local router: a client of the weighted reverse proxy's loopback admin endpoint, and its process.

The proxy runs detached from the orchestrator so traffic keeps flowing if the orchestrator dies; rollback
can also start a fresh proxy at 100% baseline on the recorded ports when the old one is gone.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.net import wait_http_ok
from rollout.processes import ProcessRef, is_alive, spawn_detached
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights


@dataclass(frozen=True)
class LocalProxySpec:
    """Where the proxy listens and where it forwards; persisted so rollback can restart it identically."""

    host: str
    port: int
    admin_port: int
    baseline_url: str
    canary_url: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LocalProxySpec:
        return cls(**data)


def start_local_proxy(spec: LocalProxySpec, weights: Weights, *, log_path: Path) -> ProcessRef:
    cmd = [
        sys.executable,
        "-m",
        "rollout.routers.local_proxy_server",
        f"--host={spec.host}",
        f"--port={spec.port}",
        f"--admin-port={spec.admin_port}",
        f"--baseline={spec.baseline_url}",
        f"--canary={spec.canary_url}",
        f"--weights={weights.baseline},{weights.canary}",
    ]
    ref = spawn_detached(cmd, log_path=log_path)
    wait_http_ok(spec.admin_url + "/healthz", timeout_s=30, alive=lambda: is_alive(ref))
    return ref


class LocalProxyRouter:
    name = "local"

    def __init__(self, *, admin_url: str, timeout_s: float = 5.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + "/admin/weights",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RouterUnavailable(
                f"local router {self.admin_url} refused {method}: {exc.read()[:300]!r}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise RouterUnavailable(f"local router {self.admin_url} unreachable: {exc}") from exc

    def set_weights(self, baseline: int, canary: int) -> None:
        weights = Weights(baseline=baseline, canary=canary)
        answer = self._call("PUT", weights.as_dict())
        if Weights.from_dict(answer) != weights:
            raise RouterUnavailable(f"local router answered {answer} after being set to {weights.as_dict()}")

    def get_weights(self) -> Weights:
        return Weights.from_dict(self._call("GET"))

    def verify_weights(self, expected: Weights) -> WeightCheck:
        try:
            actual = self.get_weights()
        except RouterUnavailable:
            return WeightCheck.UNKNOWN
        return WeightCheck.MATCHES if actual == expected else WeightCheck.DIFFERS
