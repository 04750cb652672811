"""`python -m gates`: evaluate the gates once, or export / validate / print a gate file.

    python -m gates [evaluate] --prometheus URL --window 10m --weights baseline=90,canary=10 \\
        --offered-rps 8 --json out.json --markdown out.md --junit out.xml
    python -m gates export --format argo|flagger|flagger-analysis --profile kubernetes --prometheus-address URL
    python -m gates validate FILE [--profile kubernetes]
    python -m gates defaults

Exit codes: 0 pass, 1 fail, 2 inconclusive, 3 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gates.config import ARMS, DEFAULT_GATE_FILE, PROFILES, GateConfigError, load_gate_file
from gates.evaluate import evaluate
from gates.export import (
    ARGO_ADDRESS_ENV,
    EXPORT_FORMATS,
    HISTORY_DELAY,
    TOKEN_KEY,
    PrometheusAccess,
    flagger_analysis,
    flagger_interval,
    not_exported,
    sized_timing,
    to_argo,
    to_flagger,
)
from gates.loadtest_samples import LoadtestSamplesError
from gates.record import Evaluation
from gates.report import to_junit, to_markdown
from infra.cli import EXIT_USAGE, UsageErrorParser

SUBCOMMANDS = ("evaluate", "export", "validate", "defaults")
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus.monitoring:9090"


class _UsageError(Exception):
    pass


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 300, 300s, 10m, 1h)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in ARMS or not value:
            raise argparse.ArgumentTypeError(f"weights must look like baseline=90,canary=10, got {text!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight {key}={value!r} is not a number") from exc
    if set(out) != set(ARMS):
        raise argparse.ArgumentTypeError(f"weights need both arms {list(ARMS)}, got {text!r}")
    return out


def _variables(pairs: list[str]) -> dict[str, Any]:
    """`name=value`, or `name.baseline=value` / `name.canary=value` for a per-arm value."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _UsageError(f"--var needs name=value, got {pair!r}")
        name, _, arm = key.partition(".")
        if arm:
            if arm not in ARMS:
                raise _UsageError(f"--var {key}: the part after '.' must be one of {list(ARMS)}")
            existing = out.setdefault(name, {})
            if not isinstance(existing, dict):
                raise _UsageError(f"--var {name} given both for all arms and per arm")
            existing[arm] = value
        else:
            out[name] = value
    for name, value in out.items():
        if isinstance(value, dict) and set(value) != set(ARMS):
            raise _UsageError(f"--var {name}: per-arm values need both {name}.baseline and {name}.canary")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = UsageErrorParser(
        prog="python -m gates",
        description="Canary gate evaluator (exit 0 pass, 1 fail, 2 inconclusive, 3 usage error)",
    )
    sub = parser.add_subparsers(dest="command", parser_class=UsageErrorParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--gate-file",
            type=Path,
            default=os.environ.get("CANARY_GATE_FILE"),
            help="gate YAML (default: packaged defaults)",
        )
        p.add_argument("--profile", choices=PROFILES, default=os.environ.get("CANARY_GATE_PROFILE", "local"))
        p.add_argument(
            "--var",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="template variable; NAME.canary=V for one arm",
        )

    ev = sub.add_parser("evaluate", help="evaluate every gate once")
    common(ev)
    ev.add_argument("--prometheus", required=True, help="Prometheus base URL")
    ev.add_argument("--start", type=float, help="window start, unix seconds")
    ev.add_argument("--end", type=float, help="window end, unix seconds (default: now)")
    ev.add_argument("--window", type=_duration_s, help="window length ending at --end (e.g. 10m)")
    ev.add_argument(
        "--weights", type=_weights, required=True, help="percent of traffic, e.g. baseline=90,canary=10"
    )
    ev.add_argument("--offered-rps", type=float, help="total offered request rate (both arms)")
    ev.add_argument("--loadtest-samples", type=Path, help="per-request JSONL from loadtest/vlm.py")
    ev.add_argument(
        "--previous",
        type=Path,
        action="append",
        default=[],
        help="earlier evaluation JSON (oldest first), for hysteresis",
    )
    ev.add_argument("--timeout", type=float, default=10.0, help="seconds per Prometheus query")
    ev.add_argument("--json", type=Path, help="write the JSON record here")
    ev.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    ev.add_argument("--junit", type=Path, help="write JUnit XML here")

    ex = sub.add_parser(
        "export",
        help="export as Argo Rollouts AnalysisTemplates, Flagger MetricTemplates or a Flagger Canary analysis block",
    )
    common(ex)
    ex.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        required=True,
        help="argo: step and background AnalysisTemplates; flagger: MetricTemplates; "
        "flagger-analysis: the Canary's spec.analysis using them",
    )
    ex.add_argument(
        "--prometheus-address", help=f"Prometheus base URL (default {DEFAULT_PROMETHEUS_ADDRESS})"
    )
    ex.add_argument(
        "--prometheus-address-from-controller",
        action="store_true",
        help=f"Argo: no address in the templates; the controller's {ARGO_ADDRESS_ENV} gives it",
    )
    ex.add_argument(
        "--prometheus-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header sent with every query (repeatable)",
    )
    ex.add_argument(
        "--prometheus-secret",
        metavar="NAME",
        help=f"a Secret in the analysis' namespace whose `{TOKEN_KEY}` is sent as a bearer token "
        "(Flagger also takes `username` and `password`)",
    )
    ex.add_argument("--prometheus-insecure", action="store_true", help="skip TLS certificate verification")
    ex.add_argument(
        "--prometheus-timeout",
        type=int,
        metavar="SECONDS",
        help="Argo: per-query timeout (Flagger's provider always waits 5 s)",
    )
    ex.add_argument(
        "--cluster-scope",
        action="store_true",
        help="Argo: ClusterAnalysisTemplates (reference them with clusterScope: true)",
    )
    ex.add_argument("--name", default="canary-gates", help="template name (prefix for Flagger)")
    ex.add_argument(
        "--namespace", help="metadata.namespace of Flagger MetricTemplates (and their templateRef)"
    )
    ex.add_argument(
        "--rate",
        type=float,
        help="request rate (req/s) offered to the route during the rollout: sizes --window, --interval and "
        "--initial-delay so that a healthy canary's checks have their samples at every --step-weights "
        "weight (assumes the rate is split exactly by weight, Poisson arrivals, a scrape delay up to 30 s); "
        "without it the timing is 5m / 1m and may starve a 10%% step",
    )
    ex.add_argument("--window", help="PromQL window of every query (default 5m, or sized by --rate)")
    ex.add_argument(
        "--interval",
        help="time between measurements / checks (default 1m, or sized by --rate; unless given, Flagger's is "
        "at least the time a check must read of a step's traffic and of the canary pods' life, e.g. the "
        "leak check's warm-up, envelope and points: Flagger checks one interval after each weight change)",
    )
    ex.add_argument(
        "--initial-delay",
        help="Argo: wait before the first measurement, for every metric (default: --window, and for a metric "
        "that needs the pods' history, e.g. the leak check's warm-up, envelope and points, the template's "
        "arg history-delay, that long unless a step passes less: a step after the first, whose canary pods "
        "lived through the first, may pass the window)",
    )
    ex.add_argument(
        "--dry-run", action="store_true", help="Argo: record every metric without letting it decide"
    )
    ex.add_argument(
        "--step-weights",
        default="10,50",
        help="canary weights at which the checks run (Flagger: its stepWeights before promotion; Argo: the "
        "steps that run the template); --rate sizes for the hardest of them (default 10,50)",
    )
    ex.add_argument("--output", "-o", type=Path, help="write here instead of stdout")

    va = sub.add_parser("validate", help="validate a gate file and print its gates")
    common(va)
    sub.add_parser("defaults", help="print the packaged default gate file")
    return parser


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _evaluate(args: argparse.Namespace) -> int:
    end = args.end if args.end is not None else time.time()
    if args.start is not None and args.window is not None:
        raise _UsageError("give --start or --window, not both")
    if args.start is None and args.window is None:
        raise _UsageError("give the window: --start (unix seconds) or --window (e.g. 10m)")
    start = args.start if args.start is not None else end - args.window
    config = load_gate_file(args.gate_file, profile=args.profile)
    streaks: dict[str, int] = {}
    for p in args.previous:  # each earlier record carries every gate's failing streak up to it
        try:
            streaks = Evaluation.from_dict(json.loads(p.read_text())).streaks()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _UsageError(f"--previous {p}: {exc}") from exc
    ev = evaluate(
        config,
        prometheus_url=args.prometheus,
        start=start,
        end=end,
        weights=args.weights,
        offered_rps=args.offered_rps,
        variables=_variables(args.var),
        loadtest_samples=args.loadtest_samples,
        streaks=streaks,
        timeout_s=args.timeout,
    )
    record = json.dumps(ev.to_dict(), indent=2)
    _write(args.json, record + "\n")
    _write(args.markdown, to_markdown(ev))
    _write(args.junit, to_junit(ev))
    for g in ev.gates:
        print(f"{g.verdict.mark + (' (dry-run)' if g.dry_run else ''):23} {g.name}: {g.reason}")
    print(f"verdict: {ev.verdict} ({ev.reason})")
    return ev.verdict.exit_code


_WIDE = 1 << 16  # one line per query: PromQL folded over lines is hard to read and to grep


def _prometheus_access(args: argparse.Namespace) -> PrometheusAccess:
    if args.format != "argo":
        argo_only = [
            f"--{n.replace('_', '-')}"
            for n in ("prometheus_address_from_controller", "cluster_scope")
            if getattr(args, n)
        ]
        if argo_only:
            raise _UsageError(f"{' and '.join(argo_only)}: Argo only")
    address = args.prometheus_address or DEFAULT_PROMETHEUS_ADDRESS
    if args.prometheus_address_from_controller:
        if args.prometheus_address:
            raise _UsageError("--prometheus-address or --prometheus-address-from-controller, not both")
        address = None
    headers = []
    for header in args.prometheus_header:
        key, sep, value = header.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key.strip()) or not value.strip():
            raise _UsageError(f"--prometheus-header {header!r}: give 'Name: value'")
        headers.append((key.strip(), value.strip()))
    if args.prometheus_timeout is not None and args.prometheus_timeout <= 0:
        raise _UsageError(
            f"--prometheus-timeout {args.prometheus_timeout}: give a positive number of seconds"
        )
    return PrometheusAccess(
        address,
        tuple(headers),
        args.prometheus_secret,
        args.prometheus_insecure,
        args.prometheus_timeout,
    )


def _export(args: argparse.Namespace) -> int:
    config = load_gate_file(args.gate_file, profile=args.profile)
    if args.var:
        config = type(config)(
            config.profile, config.gates, {**config.variables, **_variables(args.var)}, config.source
        )
    try:
        weights = [int(w) for w in args.step_weights.split(",")]
    except ValueError as exc:
        raise _UsageError(f"--step-weights {args.step_weights!r}: {exc}") from exc
    interval_given = args.interval is not None
    if args.rate is not None:
        given = [f"--{n}" for n in ("window", "interval") if getattr(args, n) is not None]
        if given:
            raise _UsageError(f"--rate sizes {' and '.join(given)}: give one or the other")
        timing = sized_timing(config, rate_rps=args.rate, step_weights=weights)
        args.window, args.interval = timing.window, timing.interval
        print(f"timing {timing.window} window, {timing.interval} interval: {timing.basis}", file=sys.stderr)
    args.window, args.interval = args.window or "5m", args.interval or "1m"
    # Flagger's CRD takes minutes or seconds only (`^[0-9]+(m|s)`); Argo also takes ms and h.
    pattern = r"[0-9]+(ms|s|m|h)" if args.format == "argo" else r"[0-9]+(s|m)"
    for value in (args.window, args.interval, args.initial_delay):
        if value is not None and not re.fullmatch(pattern, value):
            example = "30s, 5m or 1h" if args.format == "argo" else "30s or 90m (Flagger takes no hours)"
            raise _UsageError(f"{value!r} is not a duration like {example}")
    if args.format == "flagger-analysis" and not interval_given:
        args.interval, why = flagger_interval(config, args.interval)
        if why:
            print(why, file=sys.stderr)
    prometheus = _prometheus_access(args)
    if args.format == "argo":
        docs = to_argo(
            config,
            name=args.name,
            prometheus=prometheus,
            window=args.window,
            interval=args.interval,
            initial_delay=args.initial_delay,
            dry_run=args.dry_run,
            cluster_scope=args.cluster_scope,
        )
        text = yaml.safe_dump_all(docs, sort_keys=False, width=_WIDE)
        waiting = [m["name"] for m in docs[0]["spec"]["metrics"] if HISTORY_DELAY in m["initialDelay"]]
        if waiting:
            delay = next(a["value"] for a in docs[0]["spec"]["args"] if a["name"] == HISTORY_DELAY)
            print(
                f"{HISTORY_DELAY} {delay}: {', '.join(waiting)} must read that long of the step's traffic and "
                f"the canary pods' life; a step after the first, whose pods lived through it, may pass the "
                f"window ({args.window}) as the arg",
                file=sys.stderr,
            )
    elif args.format == "flagger":
        docs = to_flagger(config, name=args.name, prometheus=prometheus, namespace=args.namespace)
        text = yaml.safe_dump_all(docs, sort_keys=False, width=_WIDE)
    else:
        block = flagger_analysis(
            config,
            name=args.name,
            template_namespace=args.namespace,
            interval=args.interval,
            window=args.window,
            step_weights=weights,
        )
        text = yaml.safe_dump(block, sort_keys=False, width=_WIDE)
    skipped = not_exported(config)
    if skipped:
        print(f"not exported (see docs/gates.md): {', '.join(skipped)}", file=sys.stderr)
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["evaluate", *argv]  # `python -m gates --prometheus ...` evaluates
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0; usage errors exit 3 (see UsageErrorParser)
        return int(exc.code or 0)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "export":
            return _export(args)
        if args.command == "validate":
            config = load_gate_file(args.gate_file, profile=args.profile)
            for g in config.gates:
                print(f"{g.name} ({g.kind}): {', '.join(sorted(g.queries))}")
            print(f"{len(config.gates)} gates valid for profile {config.profile}")
            return 0
        if args.command == "defaults":
            sys.stdout.write(DEFAULT_GATE_FILE.read_text())
            return 0
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    except (GateConfigError, LoadtestSamplesError, _UsageError) as exc:
        print(f"python -m gates: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
