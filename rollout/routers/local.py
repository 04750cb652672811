"""Router kind `local`: a client of the weighted reverse proxy's loopback admin endpoint, and how the proxy starts.

The proxy runs detached from the orchestrator so traffic keeps flowing if the orchestrator dies. The local
stack starts it (`start_local_proxy`) and stops it; the router starts a fresh one on the recorded ports, at
the weights being set, when the old one is gone, so a rollback works after any crash.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.net import wait_http_ok
from rollout.processes import ProcessRef, is_alive, spawn_detached
from rollout.routers.base import RouterKind, RouterUnavailable, Verification, WeightCheck, Weights


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
    """Talks to the proxy's admin endpoint. Given the proxy's spec and process, it also restarts a dead
    proxy on the same ports with the weights being set, so rollback works after any crash."""

    name = "local"

    def __init__(
        self,
        *,
        admin_url: str,
        timeout_s: float = 5.0,
        spec: LocalProxySpec | None = None,
        process: ProcessRef | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.timeout_s = timeout_s
        self.spec = spec
        self.process = process
        self.log_path = log_path

    @classmethod
    def for_process(cls, spec: LocalProxySpec, process: ProcessRef, log_path: Path) -> LocalProxyRouter:
        return cls(admin_url=spec.admin_url, spec=spec, process=process, log_path=log_path)

    def describe(self) -> dict:
        return {
            "kind": self.name,
            "admin_url": self.admin_url,
            "spec": None if self.spec is None else self.spec.as_dict(),
            "process": None if self.process is None else self.process.as_dict(),
            "log_path": None if self.log_path is None else str(self.log_path),
        }

    @classmethod
    def from_description(cls, data: dict) -> LocalProxyRouter:
        return cls(
            admin_url=data["admin_url"],
            spec=None if data.get("spec") is None else LocalProxySpec.from_dict(data["spec"]),
            process=None if data.get("process") is None else ProcessRef.from_dict(data["process"]),
            log_path=None if data.get("log_path") is None else Path(data["log_path"]),
        )

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

    def _restartable(self) -> bool:
        if self.spec is None or self.log_path is None:
            return False
        # A proxy that was just killed can take a moment to disappear; wait briefly before deciding
        # that it is alive but not answering (then it is not ours to replace).
        deadline = time.monotonic() + 3.0
        while self.process is not None and is_alive(self.process):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def set_weights(self, weights: Weights) -> None:
        try:
            answer = self._call("PUT", weights.as_dict())
        except RouterUnavailable:
            if not self._restartable():
                raise
            assert self.spec is not None and self.log_path is not None
            # The proxy died (or was never started here): start it again, already at these weights.
            self.process = start_local_proxy(self.spec, weights, log_path=self.log_path)
            answer = self._call("GET")
        if Weights.from_dict(answer) != weights:
            raise RouterUnavailable(f"local router answered {answer} after being set to {weights.as_dict()}")

    def get_weights(self) -> Weights:
        return Weights.from_dict(self._call("GET"))

    def verify_weights(self, expected: Weights) -> Verification:
        """The proxy applies what its admin endpoint reports, at once."""
        try:
            actual = self.get_weights()
        except RouterUnavailable as exc:
            return Verification(WeightCheck.UNKNOWN, str(exc))
        if actual != expected:
            return Verification(WeightCheck.DIFFERS, f"the proxy routes {actual.as_dict()}")
        return Verification(WeightCheck.MATCHES)


ROUTER = RouterKind(LocalProxyRouter.name, from_description=LocalProxyRouter.from_description)
