"""The load generator's options on Locust's own parser (each also a LOCUST_* environment variable).

Values stay plain strings and numbers in `parsed_options`, because a Locust master ships them to its
workers as msgpack; `load_config` turns them into typed settings where they are used. Validators
run at parse time, so a bad value is one argparse error line naming the option.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.payloads import IMAGE_FORMATS, ImageSize, RequestShape, parse_image_sizes
from loadtest.schedule import ARRIVALS, Schedule, parse_stages
from loadtest.summary import SloRule, parse_slo


def _checked(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type that validates a spec string and keeps the string itself."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return check


def _number(kind: type, *, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>' if strict else '>='} {minimum:g}")
        return value

    return convert


def _share(text: str) -> float:
    value = _number(float, minimum=0.0)(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be within [0, 1]")
    return value


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return text


# (flag, type, default, help); the env var is LOCUST_ + the flag in upper snake case.
_OPTIONS: list[tuple[str, Any, Any, str]] = [
    (
        "--rate",
        _number(float, minimum=0.0, strict=True),
        10.0,
        "requests per second, open loop (ignored with --stages)",
    ),
    ("--arrival", str, "poisson", f"arrival process: {' | '.join(ARRIVALS)}"),
    (
        "--burstiness",
        _number(float, minimum=0.0, strict=True),
        1.0,
        "gamma shape: <1 burstier, 1 = Poisson, >1 smoother",
    ),
    ("--seed", int, 0, "seed of the schedule and of the request contents"),
    (
        "--stages",
        _checked(parse_stages),
        "",
        "name:duration@rate,... e.g. warmup:10s@5,measure:60s@20 (ends the run)",
    ),
    (
        "--max-in-flight",
        _number(int, minimum=1),
        256,
        "most outstanding requests per Locust process; more are dropped",
    ),
    (
        "--late-ms",
        _number(float, minimum=0.0),
        10.0,
        "a send later than this after its scheduled time counts as late",
    ),
    ("--drop-after-ms", _number(float, minimum=0.0), 1000.0, "an arrival reached later than this is dropped"),
    (
        "--drain-timeout",
        _number(float, minimum=0.0),
        10.0,
        "seconds in-flight requests get to finish when the run stops",
    ),
    (
        "--start-delay",
        _number(float, minimum=0.0),
        2.0,
        "master/workers: seconds between start and the first arrival",
    ),
    ("--request-timeout", _number(float, minimum=0.0, strict=True), 300.0, "seconds one request may take"),
    ("--chat-path", str, "/v1/chat/completions", "path of the OpenAI-compatible chat endpoint"),
    ("--model", str, "default", "the request's model field"),
    ("--max-tokens", _number(int, minimum=1), 64, "the request's max_tokens"),
    ("--prompt", str, "Describe this image in detail.", "text part of every synthetic request"),
    ("--extra-body", _json_object, "{}", 'JSON merged into every request body, e.g. {"ignore_eos": true}'),
    ("--images-per-request", _number(int, minimum=0), 1, "synthetic images per request"),
    (
        "--image-sizes",
        _checked(parse_image_sizes),
        "448x448",
        "WxH[:weight],... resolution mix, e.g. 448x448:3,1920x1080:1",
    ),
    ("--image-format", str, "jpeg", f"synthetic image encoding: {' | '.join(IMAGE_FORMATS)}"),
    ("--image-variants", _number(int, minimum=1), 8, "distinct base images per size"),
    ("--unique-image-share", _share, 1.0, "share of images made unique per request (server cache misses)"),
    ("--dataset", str, "", "JSONL of {prompt, images: [paths], max_tokens}; replaces synthetic requests"),
    ("--requests-jsonl", str, "", "write one JSON record per request here (flushed as they complete)"),
    ("--summary-json", str, "", "write the run summary here when the run ends"),
    ("--arm-header", str, "x-canary-arm", "response header naming the arm that served the request"),
    (
        "--slo",
        _checked(parse_slo),
        "",
        "client-side SLOs, e.g. ttft_ms.p99<=500,error_rate<=0.001 (exit 4 if missed)",
    ),
    (
        "--max-rate-error-pct",
        _number(float, minimum=0.0),
        2.0,
        "self-check: exit 3 if the achieved rate is off by more",
    ),
    (
        "--max-lag-p99-ms",
        _number(float, minimum=0.0),
        10.0,
        "self-check: exit 3 if schedule lag p99 is above this",
    ),
]
_CHOICES = {"--arrival": ARRIVALS, "--image-format": IMAGE_FORMATS}


DEFAULTS: dict[str, Any] = {flag: default for flag, _, default, _ in _OPTIONS}  # flag -> default


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def register(parser: Any) -> None:
    group = parser.add_argument_group("open-loop VLM load (loadtest/vlm.py); -u/-r do not change the rate")
    for flag, kind, default, help_text in _OPTIONS:
        env = "LOCUST_" + dest(flag).upper()
        group.add_argument(
            flag,
            type=kind,
            default=default,
            choices=_CHOICES.get(flag),
            env_var=env,
            help=f"{help_text} (default {default!r}; env {env})",
        )


def option_values(parsed: Any) -> dict[str, Any]:
    return {dest(flag): getattr(parsed, dest(flag)) for flag, *_ in _OPTIONS}


@dataclass(frozen=True)
class LoadConfig:
    schedule: Schedule
    nominal_rate: float
    shape: RequestShape
    image_sizes: tuple[ImageSize, ...]
    slo: tuple[SloRule, ...]
    values: dict[str, Any]

    @property
    def finite(self) -> bool:
        return math.isfinite(self.schedule.duration_s)


def load_config(parsed: Any) -> LoadConfig:
    """Typed settings from `parsed_options` (raises ValueError naming the bad value)."""
    values = option_values(parsed)
    stages = parse_stages(values["stages"])
    if stages:
        schedule = Schedule(stages, values["arrival"], values["burstiness"], values["seed"])
        total = sum(s.rate * s.duration_s for s in stages)
        nominal = total / schedule.duration_s
    else:
        schedule = Schedule.open_ended(
            values["rate"], values["arrival"], values["burstiness"], values["seed"]
        )
        nominal = values["rate"]
    shape = RequestShape(
        values["model"], values["max_tokens"], values["prompt"], json.loads(values["extra_body"])
    )
    return LoadConfig(
        schedule, nominal, shape, parse_image_sizes(values["image_sizes"]), parse_slo(values["slo"]), values
    )
