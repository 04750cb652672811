"""Command-line parsing and rehearsal fault settings (no servers)."""

from __future__ import annotations

import pytest

from backend.config import bucket_args, parse_config
from backend.faults import FaultSettings, FaultSettingsError

BASE = ["--model-path", "m", "--port", "30001"]


def test_defaults_follow_upstream():
    cfg = parse_config([*BASE, "--tp-size", "4"])
    assert cfg.mm_input_mode == "per_rank"  # sglang 0.5.23's default
    assert cfg.served_model_name == "m" and cfg.cpu_cores == 4.0 and not cfg.enable_metrics
    assert cfg.faults == FaultSettings()


def test_broadcast_flag_is_the_per_request_alias_and_conflicts_are_refused(capsys):
    assert parse_config([*BASE, "--enable-broadcast-mm-inputs-process"]).mm_input_mode == "per_request"
    cfg = parse_config([*BASE, "--enable-broadcast-mm-inputs-process", "--mm-input-mode", "per_request"])
    assert cfg.mm_input_mode == "per_request"
    with pytest.raises(SystemExit):
        parse_config([*BASE, "--enable-broadcast-mm-inputs-process", "--mm-input-mode", "batched"])
    assert "conflicts with --mm-input-mode batched" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tp-size", "0"], "--tp-size"),
        (["--cpu-cores", "0"], "--cpu-cores"),
        (["--step-cost-ms", "-1"], "--step-cost-ms"),
        (["--max-running-requests", "0"], "--max-running-requests"),
        (["--mm-input-mode", "fastest"], "--mm-input-mode"),
        (["--fault-error-ratio", "1.5"], "error_ratio"),
        (["--fault-leak-kib-per-request", "-3"], "leak_kib_per_request"),
    ],
)
def test_bad_flags_exit_with_a_message_naming_them(flags, named, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config([*BASE, *flags])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_fault_updates_validate_and_keep_the_rest():
    faults = FaultSettings(extra_latency_ms=5).updated({"leak_kib_per_request": 64})
    assert faults.as_dict() == {
        "leak_kib_per_request": 64, "extra_latency_ms": 5, "error_ratio": 0.0, "cpu_burn_ms": 0.0,
        "reset_ratio": 0.0,
    }  # fmt: skip
    with pytest.raises(FaultSettingsError, match="unknown fault field.*'leak'"):
        faults.updated({"leak": 1})
    with pytest.raises(FaultSettingsError, match="'error_ratio' must be within"):
        faults.updated({"error_ratio": 1.01})
    with pytest.raises(FaultSettingsError, match="'reset_ratio' must be within"):
        faults.updated({"reset_ratio": 1.5})
    with pytest.raises(FaultSettingsError, match="'cpu_burn_ms' must be a finite number"):
        faults.updated({"cpu_burn_ms": "10"})
    with pytest.raises(FaultSettingsError, match="'extra_latency_ms' must be a finite number"):
        faults.updated({"extra_latency_ms": float("nan")})
    with pytest.raises(FaultSettingsError, match="must be a JSON object"):
        faults.updated([1])
    assert faults.extra_latency_ms == 5  # a refused update changed nothing


def test_keep_alive_comes_from_sglangs_variable(monkeypatch, capsys):
    monkeypatch.delenv("SGLANG_TIMEOUT_KEEP_ALIVE", raising=False)
    assert parse_config(BASE).keep_alive_s == 5.0  # sglang 0.5.23's default
    monkeypatch.setenv("SGLANG_TIMEOUT_KEEP_ALIVE", "120")
    assert parse_config(BASE).keep_alive_s == 120.0
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("SGLANG_TIMEOUT_KEEP_ALIVE", bad)
        with pytest.raises(SystemExit):
            parse_config(BASE)
        assert (
            f"SGLANG_TIMEOUT_KEEP_ALIVE must be a number of seconds > 0, got {bad!r}"
            in capsys.readouterr().err
        )


def test_latency_bucket_flags_are_sglangs_and_checked():
    assert parse_config(BASE).latency_buckets.e2e[:3] == (0.1, 0.2, 0.4)  # sglang 0.5.23's defaults
    cfg = parse_config(
        [*BASE, "--bucket-e2e-request-latency", "0.4", "0.43", "0.46", "--bucket-inter-token-latency", "0.01"]
    )
    assert cfg.latency_buckets.e2e == (0.4, 0.43, 0.46) and cfg.latency_buckets.itl == (0.01,)
    again = parse_config([*BASE, *bucket_args(cfg.latency_buckets)])  # the flags that give these buckets
    assert again.latency_buckets == cfg.latency_buckets
    for bad in (["0.5", "0.4"], ["0", "1"]):
        with pytest.raises(SystemExit):
            parse_config([*BASE, "--bucket-time-to-first-token", *bad])


def test_custom_latency_buckets_are_the_ones_exported():
    from prometheus_client import generate_latest

    from backend.metrics import BackendMetrics, LatencyBuckets

    metrics = BackendMetrics("m", 1.0, dict, LatencyBuckets(e2e=(0.4, 0.43, 0.46)))
    metrics.e2e.labels(**metrics.labels, is_streaming="false").observe(0.42)
    text = generate_latest(metrics.registry).decode()
    edges = [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("sglang:e2e_request_latency_seconds_bucket")
    ]
    assert edges[:4] == ["0.4", "0.43", "0.46", "+Inf"]
