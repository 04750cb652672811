"""The gate file: YAML, schema-validated, resolved for one profile (`local` or `kubernetes`).

Errors name the bad key (`gates[2] (cpu).max: 'high' is not of type 'number'`) and load nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PROFILES = ("local", "kubernetes")
ARMS = ("baseline", "canary")
DEFAULT_GATE_FILE = Path(__file__).with_name("defaults.yaml")
RESERVED_VARIABLES = ("arm", "window")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GateConfigError(ValueError):
    """The gate file or the variables given for it are invalid; the message names the bad key."""


# -- schema ----------------------------------------------------------------------------------------
_QUERY = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {p: {"type": "string", "minLength": 1} for p in PROFILES},
            "additionalProperties": False,
            "minProperties": 1,
        },
    ]
}
_ARMS = {"type": "array", "items": {"enum": list(ARMS)}, "minItems": 1, "uniqueItems": True}
_COMMON = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
    "kind": {"type": "string"},
    "description": {"type": "string"},
    "consecutive_failures": {"type": "integer", "minimum": 1},
    "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1},
    "dry_run": {"type": "boolean"},
}


def _kind_schema(roles_required: list[str], roles_optional: list[str], props: dict[str, Any], required=()):
    roles = roles_required + roles_optional
    return {
        "type": "object",
        "properties": {
            **_COMMON,
            **props,
            "queries": {
                "type": "object",
                "properties": {r: _QUERY for r in roles},
                "required": roles_required,
                "additionalProperties": False,
            },
        },
        "required": ["name", "kind", "queries", *required],
        "additionalProperties": False,
    }


_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 1}
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "threshold": {
        **_kind_schema(
            ["value"],
            ["samples"],
            {"arms": _ARMS, "max": _NUM, "min": _NUM, "min_samples": _COUNT, "unit": {"type": "string"}},
        ),
        "anyOf": [{"required": ["max"]}, {"required": ["min"]}],
    },
    "latency_quantile": {
        **_kind_schema(
            [],
            ["buckets"],
            {
                "arms": _ARMS,
                "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "max_seconds": _POS,
                "max_ratio": {"type": "number", "minimum": 1},
                "min_samples": _COUNT,
                "source": {"enum": ["prometheus", "loadtest", "auto"]},
                "loadtest_field": {
                    "enum": ["e2e_ms", "ttft_ms", "itl_ms", "tpot_ms", "e2e_sched_ms", "ttft_sched_ms"]
                },
            },
        ),
        "anyOf": [{"required": ["max_seconds"]}, {"required": ["max_ratio"]}],
    },
    "throughput": _kind_schema(
        ["requests"],
        [],
        {
            "min_offered_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "max_share_drop": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "min_samples": _COUNT,
        },
    ),
    "error_rate": _kind_schema(
        ["errors", "requests"],
        [],
        {"arms": _ARMS, "max": {"type": "number", "minimum": 0, "maximum": 1}, "min_samples": _COUNT},
        required=("max",),
    ),
    "memory_leak": _kind_schema(
        ["memory"],
        [],
        {
            "floor_bytes_per_minute": {"type": "number", "minimum": 0},
            "warmup_seconds": {"type": "number", "minimum": 0},
            "step_seconds": _POS,
            "min_points": {"type": "integer", "minimum": 3},
            "min_cycles": {"type": "integer", "minimum": 0},
            "envelope_seconds": _POS,
        },
    ),
}

_VARIABLE_VALUE = {
    "oneOf": [
        {"type": ["string", "number"]},
        {
            "type": "object",
            "properties": {a: {"type": ["string", "number"]} for a in ARMS},
            "required": list(ARMS),
            "additionalProperties": False,
        },
    ]
}
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "version": {"const": 1},
        "settings": {
            "type": "object",
            "properties": {
                "consecutive_failures": {"type": "integer", "minimum": 1},
                "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1},
            },
            "additionalProperties": False,
        },
        "variables": {
            "type": "object",
            "properties": {p: {"type": "object", "additionalProperties": _VARIABLE_VALUE} for p in PROFILES},
            "additionalProperties": False,
        },
        "gates": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"kind": {"enum": sorted(KIND_SCHEMAS)}, "name": {"type": "string"}},
                "required": ["name", "kind"],
            },
        },
    },
    "required": ["version", "gates"],
    "additionalProperties": False,
}

# Parameter defaults per kind, applied after validation.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "threshold": {"arms": ["canary"], "min_samples": 1, "unit": ""},
    "latency_quantile": {
        "arms": ["canary"],
        "quantile": 0.99,
        "min_samples": 300,
        "source": "auto",
        "loadtest_field": "e2e_ms",
    },
    "throughput": {"min_offered_fraction": 0.98, "max_share_drop": 0.05, "min_samples": 100},
    "error_rate": {"arms": ["canary"], "min_samples": 300},
    "memory_leak": {
        "floor_bytes_per_minute": 1048576.0,
        "warmup_seconds": 60.0,
        "step_seconds": 10.0,
        "min_points": 20,
        "min_cycles": 2,
        "envelope_seconds": 300.0,
    },
}


# -- values ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateSpec:
    name: str
    kind: str
    queries: Mapping[str, str]  # role -> PromQL template for the chosen profile
    params: Mapping[str, Any]  # kind parameters with defaults applied (max, arms, quantile, ...)
    consecutive_failures: int
    confidence: float
    description: str = ""
    dry_run: bool = False  # evaluated and recorded, never fails or holds a step (trying a gate out)

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self.params.get("arms", ARMS))


@dataclass(frozen=True)
class GateConfig:
    profile: str
    gates: tuple[GateSpec, ...]
    variables: Mapping[str, Any] = field(default_factory=dict)  # the file's defaults for this profile
    source: str = "defaults"

    def merged_variables(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        merged = dict(self.variables)
        merged.update(overrides or {})
        for key in RESERVED_VARIABLES:
            if key in merged:
                raise GateConfigError(f"variables.{key} is reserved (filled in per evaluation); remove it")
        return merged

    def check_variables(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Merged variables; raises GateConfigError naming any template variable left without a value."""
        merged = self.merged_variables(overrides)
        for gate in self.gates:
            for role, template in gate.queries.items():
                for var in template_variables(template):
                    if var not in merged and var not in RESERVED_VARIABLES:
                        raise GateConfigError(
                            f"gate {gate.name!r} query {role!r} needs variable {var!r}; pass it "
                            f"(e.g. --var {var}=...) or set variables.{self.profile}.{var} in the gate file"
                        )
                    value = merged.get(var)
                    if isinstance(value, Mapping) and set(value) != set(ARMS):
                        raise GateConfigError(
                            f"variable {var!r}: a per-arm value needs exactly keys {list(ARMS)}"
                        )
        return merged


def template_variables(template: str) -> list[str]:
    return _VAR.findall(template)


def render(
    template: str,
    variables: Mapping[str, Any],
    *,
    arm: str,
    window_s: float | None = None,
    window: str | None = None,
) -> str:
    """Fill `${name}` in a PromQL template for one arm; per-arm variables take that arm's value.

    The window is given in seconds, or as literal text (`window=`) when exporting to another tool's
    placeholder syntax.
    """
    values = dict(variables)
    values["arm"] = arm
    values["window"] = (
        window if window is not None else promql_duration(window_s if window_s is not None else 0.0)
    )

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise GateConfigError(f"template variable {name!r} has no value")
        value = values[name]
        if isinstance(value, Mapping):
            value = value[arm]
        return str(value)

    return _VAR.sub(sub, template)


def promql_duration(seconds: float) -> str:
    if not seconds > 0 or not math.isfinite(seconds):
        raise GateConfigError(f"evaluation window must be positive, got {seconds} s")
    return f"{max(int(round(seconds)), 1)}s"


# -- loading ---------------------------------------------------------------------------------------
def _path_text(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def _validate(instance: Any, schema: dict[str, Any], where: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path))
    )
    if errors:
        err = errors[0]
        location = _path_text(err.absolute_path)
        if not where:
            loc = location
        elif location == "(top level)":
            loc = where
        else:
            loc = f"{where}{'' if location.startswith('[') else '.'}{location}"
        if err.validator == "additionalProperties":
            raise GateConfigError(f"{loc}: unknown key ({err.message})")
        raise GateConfigError(f"{loc}: {err.message}")


def parse_gate_document(document: Any, profile: str, source: str = "<memory>") -> GateConfig:
    """Validate a parsed gate file and resolve it for `profile`."""
    if profile not in PROFILES:
        raise GateConfigError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if not isinstance(document, dict):
        raise GateConfigError(f"{source}: the gate file must be a mapping with keys version, settings, gates")
    _validate(document, FILE_SCHEMA, "")
    settings = document.get("settings", {})
    default_failures = int(settings.get("consecutive_failures", 2))
    default_confidence = float(settings.get("confidence", 0.95))
    seen: set[str] = set()
    gates: list[GateSpec] = []
    for i, raw in enumerate(document["gates"]):
        where = f"gates[{i}] ({raw['name']})"
        _validate(raw, KIND_SCHEMAS[raw["kind"]], where)
        if raw["name"] in seen:
            raise GateConfigError(f"{where}.name: duplicate gate name {raw['name']!r}")
        seen.add(raw["name"])
        if (
            raw["kind"] == "latency_quantile"
            and raw.get("source", "auto") != "loadtest"
            and "buckets" not in raw["queries"]
        ):
            raise GateConfigError(f"{where}.queries.buckets: required unless source is 'loadtest'")
        if "min" in raw and "max" in raw and raw["min"] > raw["max"]:
            raise GateConfigError(f"{where}.min: {raw['min']} is above max {raw['max']}")
        queries: dict[str, str] = {}
        for role, query in raw["queries"].items():
            if isinstance(query, str):
                queries[role] = query.strip()
            elif profile in query:
                queries[role] = query[profile].strip()
            else:
                raise GateConfigError(
                    f"{where}.queries.{role}: no query for profile {profile!r} (has {sorted(query)})"
                )
        params = dict(KIND_DEFAULTS[raw["kind"]])
        params.update(
            {
                k: v
                for k, v in raw.items()
                if k
                not in (
                    "name",
                    "kind",
                    "queries",
                    "description",
                    "consecutive_failures",
                    "confidence",
                    "dry_run",
                )
            }
        )
        gates.append(
            GateSpec(
                name=raw["name"],
                kind=raw["kind"],
                queries=queries,
                params=params,
                consecutive_failures=int(raw.get("consecutive_failures", default_failures)),
                confidence=float(raw.get("confidence", default_confidence)),
                description=str(raw.get("description", "")),
                dry_run=bool(raw.get("dry_run", False)),
            )
        )
    variables = dict(document.get("variables", {}).get(profile, {}))
    return GateConfig(profile=profile, gates=tuple(gates), variables=variables, source=source)


def load_gate_file(path: str | os.PathLike[str] | None, profile: str = "local") -> GateConfig:
    """Load and validate a gate file (None: the packaged defaults) for `profile`."""
    file = DEFAULT_GATE_FILE if path is None else Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise GateConfigError(f"cannot read gate file {file}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GateConfigError(f"{file}: not valid YAML: {exc}") from exc
    return parse_gate_document(document, profile, source="defaults" if path is None else str(file))
