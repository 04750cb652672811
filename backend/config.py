"""Command line of `python -m backend`, mirroring sglang's launch_server flag names where it has them."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from backend.faults import FaultSettings, FaultSettingsError
from backend.metrics import LatencyBuckets
from mminputs import DEFAULT_MODE, MMMode

# sglang 0.5.23 reads the HTTP keep-alive of idle client connections from this variable (default 5 s).
# A proxy that keeps idle connections to the server longer than this races the server's close: a request
# sent on a connection the server is closing fails before any byte of a response (docs/helm.md).
KEEP_ALIVE_ENV = "SGLANG_TIMEOUT_KEEP_ALIVE"


# sglang's flags for the latency histograms' bucket edges, and the field of LatencyBuckets each sets.
BUCKET_FLAGS = {
    "--bucket-time-to-first-token": "ttft",
    "--bucket-inter-token-latency": "itl",
    "--bucket-e2e-request-latency": "e2e",
}


def bucket_args(buckets: LatencyBuckets) -> list[str]:
    """The sglang flags that give a server these latency buckets (as `server.extraArgs` would carry them)."""
    out: list[str] = []
    for flag, field in BUCKET_FLAGS.items():
        out += [flag, *(f"{edge:g}" for edge in getattr(buckets, field))]
    return out


@dataclass(frozen=True)
class ServerConfig:
    model_path: str
    served_model_name: str
    tp_size: int
    host: str
    port: int
    enable_metrics: bool
    mm_input_mode: str
    cpu_cores: float
    step_cost_ms: float
    max_running_requests: int
    max_new_tokens_default: int
    seed: int
    faults: FaultSettings
    step_all_reduce: str = "auto"
    max_request_bytes: int = 64 * 1024 * 1024
    drain_timeout_s: float = 60.0
    health_timeout_s: float = 20.0  # sglang's HEALTH_CHECK_TIMEOUT default
    keep_alive_s: float = 5.0  # sglang's SGLANG_TIMEOUT_KEEP_ALIVE default (uvicorn's timeout_keep_alive)
    latency_buckets: LatencyBuckets = LatencyBuckets()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend",
        description="Embedded SGLang-compatible VLM server (HTTP front + TP scheduler ranks in a gloo group).",
    )
    p.add_argument("--model-path", required=True, help="model name reported by the API")
    p.add_argument("--served-model-name", default=None, help="name clients must use (default: --model-path)")
    p.add_argument("--tp-size", type=int, default=1, help="number of TP scheduler ranks")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--enable-metrics", action="store_true", help="serve /metrics")
    p.add_argument(
        "--mm-input-mode",
        choices=[m.value for m in MMMode],
        default=None,
        help=f"how TP ranks obtain materialized multimodal inputs (default: {DEFAULT_MODE}, as upstream)",
    )
    p.add_argument(
        "--enable-broadcast-mm-inputs-process",
        action="store_true",
        help="sglang's spelling of --mm-input-mode per_request",
    )
    p.add_argument("--cpu-cores", type=float, default=None, help="cores allotted (default: --tp-size)")
    p.add_argument("--step-cost-ms", type=float, default=1.0, help="CPU work per forward step per rank")
    p.add_argument(
        "--step-all-reduce",
        choices=["auto", "gloo", "nccl"],
        default="auto",
        help="per-step all-reduce: nccl over one GPU per rank (auto: when each rank has its own GPU), "
        "else gloo; multimodal inputs always move over the gloo CPU group",
    )
    p.add_argument("--max-running-requests", type=int, default=128)
    p.add_argument("--max-new-tokens-default", type=int, default=128)
    p.add_argument("--seed", "--random-seed", dest="seed", type=int, default=0)
    for flag in BUCKET_FLAGS:
        p.add_argument(
            flag, type=float, nargs="+", default=None, help="histogram bucket edges, seconds (as sglang)"
        )
    rehearsal = p.add_argument_group("rehearsal faults (for rollout rehearsals only)")
    rehearsal.add_argument("--fault-leak-kib-per-request", type=float, default=0.0)
    rehearsal.add_argument("--fault-extra-latency-ms", type=float, default=0.0)
    rehearsal.add_argument("--fault-error-ratio", type=float, default=0.0)
    rehearsal.add_argument("--fault-cpu-burn-ms", type=float, default=0.0)
    rehearsal.add_argument("--fault-reset-ratio", type=float, default=0.0)
    return p


def parse_config(argv: Sequence[str] | None = None) -> ServerConfig:
    """Parse and validate; a bad value exits with a usage error that names the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    mode = args.mm_input_mode
    if args.enable_broadcast_mm_inputs_process:
        if mode not in (None, "per_request"):
            parser.error(f"--enable-broadcast-mm-inputs-process conflicts with --mm-input-mode {mode}")
        mode = "per_request"
    positive = {
        "--tp-size": args.tp_size,
        "--max-running-requests": args.max_running_requests,
        "--max-new-tokens-default": args.max_new_tokens_default,
    }
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be within 1..65535, got {args.port}")
    if args.step_cost_ms < 0:
        parser.error(f"--step-cost-ms must be >= 0, got {args.step_cost_ms}")
    cpu_cores = float(args.tp_size) if args.cpu_cores is None else args.cpu_cores
    if cpu_cores <= 0:
        parser.error(f"--cpu-cores must be > 0, got {args.cpu_cores}")
    try:
        faults = FaultSettings(
            leak_kib_per_request=args.fault_leak_kib_per_request,
            extra_latency_ms=args.fault_extra_latency_ms,
            error_ratio=args.fault_error_ratio,
            cpu_burn_ms=args.fault_cpu_burn_ms,
            reset_ratio=args.fault_reset_ratio,
        )
    except FaultSettingsError as exc:
        parser.error(f"--fault-*: {exc}")
    edges = {}
    for flag, field in BUCKET_FLAGS.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None:
            if any(b <= a for a, b in zip(given, given[1:], strict=False)) or given[0] <= 0:
                parser.error(f"{flag} must be positive and strictly increasing, got {given}")
            edges[field] = tuple(given)
    keep_alive = os.environ.get(KEEP_ALIVE_ENV, "5")
    try:
        keep_alive_s = float(keep_alive)
    except ValueError:
        keep_alive_s = -1.0
    if not keep_alive_s > 0:
        parser.error(f"{KEEP_ALIVE_ENV} must be a number of seconds > 0, got {keep_alive!r}")
    return ServerConfig(
        model_path=args.model_path,
        served_model_name=args.served_model_name or args.model_path,
        tp_size=args.tp_size,
        host=args.host,
        port=args.port,
        enable_metrics=args.enable_metrics,
        mm_input_mode=mode or DEFAULT_MODE.value,
        cpu_cores=cpu_cores,
        step_cost_ms=args.step_cost_ms,
        max_running_requests=args.max_running_requests,
        max_new_tokens_default=args.max_new_tokens_default,
        seed=args.seed,
        faults=faults,
        step_all_reduce=args.step_all_reduce,
        keep_alive_s=keep_alive_s,
        latency_buckets=LatencyBuckets(**edges),
    )
