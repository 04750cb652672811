"""The embedded stack on one machine: two arms, the local router, a real Prometheus, Locust.

Every process runs detached (own session) and is recorded in the rollout state, so a resumed run
reattaches to it and a rollback after the orchestrator's SIGKILL can find and stop it. Either arm may
be any command line (`{port}` is replaced by a free port) or an already running server's URL, e.g. a
real sglang server on a GPU host.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.net import free_port, wait_http_ok
from infra.prometheus_api import PrometheusAPI
from rollout.processes import ProcessRef, is_alive, spawn_detached, terminate
from rollout.routers.base import Weights
from rollout.routers.local import LocalProxyRouter, LocalProxySpec, start_local_proxy

MODEL = "embedded-vlm"
BASELINE_MODE = "per_request"  # upstream's opt-in per-request broadcast (sglang PR #11910)
Say = Callable[[str], None]


def canary_default_mode() -> str:
    from mminputs import RECOMMENDED_MODE  # the candidate build's mode, named once in mminputs

    return str(RECOMMENDED_MODE)


@dataclass(frozen=True)
class ArmSpec:
    """How one arm is served: the embedded backend with these settings, a command, or a URL."""

    arm: str
    mm_input_mode: str
    tp_size: int = 2
    cpu_cores: float | None = None  # None: the backend's default, one core per TP rank
    extra_args: tuple[str, ...] = ()  # e.g. rehearsal faults: ("--fault-leak-kib-per-request", "256")
    command: str | None = None  # replaces the embedded backend; `{port}` is filled in
    url: str | None = None  # an already running server; nothing is started for this arm

    def command_line(self, port: int) -> list[str]:
        if self.command is not None:
            return shlex.split(self.command.replace("{port}", str(port)))
        return [
            sys.executable,
            "-m",
            "backend",
            f"--model-path={MODEL}",
            f"--served-model-name={MODEL}",
            f"--tp-size={self.tp_size}",
            "--host=127.0.0.1",
            f"--port={port}",
            "--enable-metrics",
            f"--mm-input-mode={self.mm_input_mode}",
            *([] if self.cpu_cores is None else [f"--cpu-cores={self.cpu_cores}"]),
            *self.extra_args,
        ]


@dataclass(frozen=True)
class LoadSpec:
    rate: float
    seed: int
    extra_args: tuple[str, ...] = ()  # passed to loadtest/vlm.py as given (image sizes, max tokens, ...)


@dataclass
class LocalStack:
    """The running stack as recorded in the rollout state (`as_dict`/`from_dict`)."""

    run_dir: Path
    arms: dict[str, dict[str, Any]]  # arm -> {"url", "process" (or None), "command", "log"}
    prometheus: dict[str, Any]  # {"url", "process", "data_dir"}
    loadtest: dict[str, Any]  # {"process", "requests_jsonl", "summary_json", "log"}; {} until it starts
    router_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "local",
            "run_dir": str(self.run_dir),
            "arms": self.arms,
            "prometheus": self.prometheus,
            "loadtest": self.loadtest,
            "router_url": self.router_url,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalStack:
        known = {"kind", "run_dir", "arms", "prometheus", "loadtest", "router_url"}
        return cls(
            run_dir=Path(data["run_dir"]),
            arms=data["arms"],
            prometheus=data["prometheus"],
            loadtest=data["loadtest"],
            router_url=data["router_url"],
            extra={k: v for k, v in data.items() if k not in known},
        )

    @property
    def prometheus_url(self) -> str:
        return str(self.prometheus["url"])

    @property
    def requests_jsonl(self) -> Path:
        return Path(self.loadtest["requests_jsonl"])

    def _ref(self, entry: dict[str, Any] | None) -> ProcessRef | None:
        if not entry or not entry.get("process"):
            return None
        return ProcessRef.from_dict(entry["process"])

    def dead_parts(self) -> list[str]:
        """Parts whose recorded process is gone (URL-only arms count as alive)."""
        dead = []
        for name, entry in (
            ("baseline", self.arms["baseline"]),
            ("canary", self.arms["canary"]),
            ("prometheus", self.prometheus),
            ("loadtest", self.loadtest),
        ):
            ref = self._ref(entry)
            if ref is not None and not is_alive(ref):
                dead.append(name)
        return dead

    def stop(self, parts: tuple[str, ...], say: Say = print) -> None:
        """Stop the named parts (`loadtest`, `canary`, `baseline`, `prometheus`) if they still run."""
        entries = {"loadtest": self.loadtest, "prometheus": self.prometheus, **self.arms}
        for part in parts:
            ref = self._ref(entries[part])
            if ref is not None and is_alive(ref):
                say(f"stopping {part} (pid {ref.pid})")
                # Locust writes its summary on SIGTERM; servers drain in-flight requests.
                terminate(ref, timeout_s=30.0 if part == "loadtest" else 15.0)
            if part == "prometheus" and self.prometheus.get("data_dir"):
                workdir = Path(self.prometheus["data_dir"]).parent
                if workdir.name.startswith("prometheus-"):
                    shutil.rmtree(workdir, ignore_errors=True)


def _metrics_target(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc


def scrape_configs(arm_urls: dict[str, str], router_admin_url: str) -> list[dict[str, Any]]:
    from infra.prometheus import static_scrape_config

    jobs = [
        static_scrape_config(arm, [_metrics_target(url)], labels={"arm": arm})
        for arm, url in arm_urls.items()
    ]
    # The router's own series already carry `arm`; its target gets no arm label.
    jobs.append(static_scrape_config("router", [_metrics_target(router_admin_url)]))
    return jobs


def _start_arm(spec: ArmSpec, run_dir: Path, say: Say) -> dict[str, Any]:
    if spec.url is not None:
        wait_http_ok(spec.url.rstrip("/") + "/health", timeout_s=60)
        return {"url": spec.url.rstrip("/"), "process": None, "command": None, "log": None}
    port = free_port()
    cmd = spec.command_line(port)
    log = run_dir / "logs" / f"{spec.arm}.log"
    ref = spawn_detached(cmd, log_path=log)
    url = f"http://127.0.0.1:{port}"
    say(f"{spec.arm}: pid {ref.pid} on {url} ({' '.join(cmd[2:]) if spec.command is None else spec.command})")
    try:
        wait_http_ok(url + "/ready", timeout_s=180, interval_s=0.5, alive=lambda: is_alive(ref))
    except (RuntimeError, TimeoutError) as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        terminate(ref)
        raise RuntimeError(f"{spec.arm} backend did not become ready: {exc}\n{tail}") from exc
    return {"url": url, "process": ref.as_dict(), "command": cmd, "log": str(log)}


def _start_prometheus(arm_urls: dict[str, str], router_admin_url: str) -> dict[str, Any]:
    from infra.prometheus import PrometheusServer

    server = PrometheusServer(scrape_configs(arm_urls, router_admin_url), scrape_interval_s=1.0).start()
    # The server object dies with this process; the Prometheus process (its own session) does not.
    # Keep what a later rollback or resume needs to find it.
    proc = getattr(server, "_proc", None)
    ref = None
    if proc is not None:
        fields = Path(f"/proc/{proc.pid}/stat").read_text()
        ref = ProcessRef(pid=proc.pid, start_ticks=int(fields[fields.rindex(")") + 2 :].split()[19]))
    return {
        "url": server.url,
        "process": None if ref is None else ref.as_dict(),
        "data_dir": str(server.data_dir),
    }


def start_loadtest(router_url: str, load: LoadSpec, run_dir: Path) -> dict[str, Any]:
    requests_jsonl = run_dir / "loadtest" / "requests.jsonl"
    summary_json = run_dir / "loadtest" / "summary.json"
    requests_jsonl.parent.mkdir(parents=True, exist_ok=True)
    locustfile = Path(__file__).resolve().parent.parent / "loadtest" / "vlm.py"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        router_url,
        "--rate",
        str(load.rate),
        "--arrival",
        "poisson",
        "--seed",
        str(load.seed),
        "--requests-jsonl",
        str(requests_jsonl),
        "--summary-json",
        str(summary_json),
        "--model",
        MODEL,
        "--loglevel",
        "WARNING",
        *load.extra_args,
    ]
    log = run_dir / "logs" / "loadtest.log"
    ref = spawn_detached(cmd, log_path=log)
    return {
        "process": ref.as_dict(),
        "requests_jsonl": str(requests_jsonl),
        "summary_json": str(summary_json),
        "log": str(log),
        "command": cmd,
    }


def start_local_stack(
    *, run_dir: Path, arms: dict[str, ArmSpec], say: Say = print
) -> tuple[LocalStack, LocalProxyRouter]:
    """Start both arms (in parallel), the router at 100% baseline, then Prometheus; the load is started
    next (`start_loadtest`, recorded in `LocalStack.loadtest`).

    On any failure everything already started is stopped again before the error propagates.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, dict[str, Any]] = {}
    router_ref: ProcessRef | None = None
    prometheus: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                arm: pool.submit(_start_arm, arms[arm], run_dir, say) for arm in ("baseline", "canary")
            }
            errors = []
            for arm, future in futures.items():
                try:
                    started[arm] = future.result()
                except Exception as exc:  # collect both before raising so nothing is left running
                    errors.append(exc)
            if errors:
                raise errors[0]
        spec = LocalProxySpec(
            host="127.0.0.1",
            port=free_port(),
            admin_port=free_port(),
            baseline_url=started["baseline"]["url"],
            canary_url=started["canary"]["url"],
        )
        router_log = run_dir / "logs" / "router.log"
        router_ref = start_local_proxy(spec, Weights(100, 0), log_path=router_log)
        say(f"router: pid {router_ref.pid} on {spec.url} (admin {spec.admin_url})")
        prometheus = _start_prometheus({a: started[a]["url"] for a in started}, spec.admin_url)
        say(f"prometheus: {prometheus['url']}")
    except BaseException:
        partial = LocalStack(run_dir=run_dir, arms=started, prometheus=prometheus, loadtest={}, router_url="")
        for arm in started:
            partial.stop((arm,), say=say)
        if prometheus:
            partial.stop(("prometheus",), say=say)
        if router_ref is not None:
            terminate(router_ref)
        raise
    stack = LocalStack(run_dir=run_dir, arms=started, prometheus=prometheus, loadtest={}, router_url=spec.url)
    return stack, LocalProxyRouter.for_process(spec, router_ref, router_log)


def wait_for_first_samples(stack: LocalStack, timeout_s: float = 60.0) -> None:
    """Block until both arms' series and the router's series are in Prometheus (scrapes landed)."""
    try:
        PrometheusAPI(stack.prometheus_url, timeout_s=5).wait_for(
            'count(up{job=~"baseline|canary|router"} == 1)',
            until=lambda samples: bool(samples) and samples[0].value >= 3,
            timeout_s=timeout_s,
            interval_s=0.5,
            what="all three targets up",
        )
    except TimeoutError as exc:
        raise TimeoutError(
            f"Prometheus at {stack.prometheus_url} has not scraped all three targets in {timeout_s:.0f}s"
        ) from exc
