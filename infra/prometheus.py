"""A real Prometheus server on loopback, and promtool backfill, for the embedded stack and the tests.

`PrometheusServer` runs Debian's `prometheus` binary with a temporary config and data directory on a
free loopback port. `backfill` turns OpenMetrics text into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`; blocks written into the data directory *before* the
server starts are loaded at startup and queryable at once (a running server only notices new blocks
at its next compaction cycle, and refuses appended samples older than its head).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from infra.net import free_port
from infra.prometheus_api import PrometheusAPI, QueryError

PROMETHEUS_BINARY = "prometheus"
PROMTOOL_BINARY = "promtool"
_INSTALL_HINT = "`make setup` installs Debian's prometheus package (scripts/install-system-deps.sh)"


class PrometheusError(RuntimeError):
    """Prometheus or promtool is missing, failed to start, or rejected its input."""


def find_binary(name: str) -> str:
    """Absolute path of `name` on PATH (or /usr/bin), with an install hint when it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        raise PrometheusError(f"`{name}` not found on PATH; {_INSTALL_HINT}")
    return path


def static_scrape_config(
    job_name: str,
    targets: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """One scrape job over fixed `host:port` targets, every series labelled with `labels` (e.g. arm)."""
    group: dict[str, Any] = {"targets": list(targets)}
    if labels:
        group["labels"] = dict(labels)
    return {"job_name": job_name, "metrics_path": metrics_path, "static_configs": [group]}


class PrometheusServer:
    """A Prometheus process on 127.0.0.1; use as a context manager or call start()/stop().

    `data_dir=None` makes a temporary one that stop() deletes; a given directory is kept (so blocks
    backfilled into it beforehand are served, and the caller owns its lifetime).
    """

    def __init__(
        self,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        *,
        scrape_interval_s: float = 1.0,
        data_dir: str | os.PathLike[str] | None = None,
        retention: str = "3650d",
        startup_timeout_s: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._scrape_configs = [dict(c) for c in scrape_configs]
        self._scrape_interval_s = scrape_interval_s
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        # Backfilled history may be old; a long retention keeps promtool blocks from being dropped.
        self._retention = retention
        self._startup_timeout_s = startup_timeout_s
        self._extra_args = list(extra_args)
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> PrometheusAPI:
        """The project's Prometheus client, pointed at this server."""
        return PrometheusAPI(self.url)

    @property
    def data_dir(self) -> Path:
        if self._given_data_dir is not None:
            return self._given_data_dir
        if self._workdir is None:
            raise PrometheusError("Prometheus is not started and has no data_dir")
        return self._workdir / "data"

    @property
    def pid(self) -> int | None:
        """Process id of the server (it runs in its own session, so it outlives a crashed parent)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def workdir(self) -> Path | None:
        """Temporary directory holding the config, the log and (without data_dir) the data."""
        return self._workdir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PrometheusServer:
        if self.running:
            return self
        binary = find_binary(PROMETHEUS_BINARY)
        self._workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(self._scrape_configs)
        self._log_path = self._workdir / "prometheus.log"
        self.port = free_port()
        cmd = [
            binary,
            f"--config.file={self._workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self._retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            *self._extra_args,
        ]
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.api.wait_ready(self._startup_timeout_s, alive=lambda: self.running)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log_tail()
            self.stop()
            raise PrometheusError(
                f"Prometheus did not become ready: {exc}\n--- log tail ---\n{tail}"
            ) from exc
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ---------------------------------------------------------------------------
    def _write_config(self, scrape_configs: Sequence[Mapping[str, Any]]) -> None:
        assert self._workdir is not None
        interval = f"{int(round(self._scrape_interval_s * 1000))}ms"
        jobs = [dict(c) for c in scrape_configs]
        for job in jobs:
            job.setdefault("scrape_timeout", interval)
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": jobs,
        }
        (self._workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def reload(self, scrape_configs: Sequence[Mapping[str, Any]], timeout_s: float = 10.0) -> None:
        """Replace the scrape jobs and ask the running server to reload its config file."""
        if not self.running:
            raise PrometheusError("cannot reload: Prometheus is not running")
        self._scrape_configs = [dict(c) for c in scrape_configs]
        self._write_config(self._scrape_configs)
        try:
            PrometheusAPI(self.url, timeout_s).reload()
        except QueryError as exc:
            raise PrometheusError(f"Prometheus rejected the new config: {exc}\n{self.log_tail()}") from exc

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_series(self, promql: str, timeout_s: float = 15.0) -> None:
        """Block until an instant query of `promql` returns at least one series (live scrapes landed)."""
        PrometheusAPI(self.url, timeout_s=5).wait_for(promql, timeout_s=timeout_s)


def backfill(openmetrics: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> list[str]:
    """Write TSDB blocks for OpenMetrics samples into `data_dir`; returns promtool's output lines.

    `openmetrics` is the text itself or a path to a file holding it. Timestamps are unix seconds,
    each series' samples time-sorted, and the text ends with `# EOF`. Do this before starting the
    server on `data_dir`.
    """
    promtool = find_binary(PROMTOOL_BINARY)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="backfill-") as tmp:
        if isinstance(openmetrics, str) and ("\n" in openmetrics or openmetrics.startswith("#")):
            source = Path(tmp) / "input.om"
            source.write_text(openmetrics if openmetrics.endswith("\n") else openmetrics + "\n")
        else:
            source = Path(openmetrics)
        text_tail = source.read_text().rstrip().splitlines()[-1:] if source.exists() else []
        if text_tail != ["# EOF"]:
            raise PrometheusError(f"OpenMetrics input {source} must end with a '# EOF' line")
        proc = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise PrometheusError(f"promtool backfill failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def openmetrics_text(series: Iterable[tuple[str, Mapping[str, str], Sequence[tuple[float, float]]]]) -> str:
    """OpenMetrics text for `(metric name, labels, [(unix seconds, value), ...])` triples, ending in EOF.

    Triples naming the same series (name and labels) are merged, and each series' samples sorted by
    time, as promtool requires.
    """
    merged: dict[str, list[tuple[float, float]]] = {}
    for name, labels, samples in series:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{label_text}}}" if label_text else name
        merged.setdefault(prefix, []).extend(samples)
    lines: list[str] = []
    for prefix, samples in merged.items():
        for ts, value in sorted(samples, key=lambda s: s[0]):
            lines.append(f"{prefix} {_number(value)} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
