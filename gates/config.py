"""The gate file: YAML, schema-validated, resolved for one profile (`local` or `kubernetes`).

Errors name the bad key (`gates[2] (cpu).max: 'high' is not of type 'number'`) and load nothing. The
values it yields are in `gates.spec`; each kind's schema and defaults in its file under `gates/kinds/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gates.kinds import KINDS
from gates.spec import (
    ARMS,
    PROFILES,
    RESERVED_VARIABLES,
    GateConfig,
    GateConfigError,
    GateSpec,
    promql_duration,
    render,
    template_variables,
)

DEFAULT_GATE_FILE = Path(__file__).with_name("defaults.yaml")

# -- schema ----------------------------------------------------------------------------------------
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


def file_schema() -> dict[str, Any]:
    """The gate file's schema; a gate entry's own keys are checked against its kind's schema."""
    return {
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
                "properties": {
                    p: {"type": "object", "additionalProperties": _VARIABLE_VALUE} for p in PROFILES
                },
                "additionalProperties": False,
            },
            "gates": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"kind": {"enum": sorted(KINDS)}, "name": {"type": "string"}},
                    "required": ["name", "kind"],
                },
            },
        },
        "required": ["version", "gates"],
        "additionalProperties": False,
    }


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
    _validate(document, file_schema(), "")
    settings = document.get("settings", {})
    default_failures = int(settings.get("consecutive_failures", 2))
    default_confidence = float(settings.get("confidence", 0.95))
    seen: set[str] = set()
    gates: list[GateSpec] = []
    for i, raw in enumerate(document["gates"]):
        where = f"gates[{i}] ({raw['name']})"
        kind = KINDS[raw["kind"]]
        _validate(raw, dict(kind.schema), where)
        if raw["name"] in seen:
            raise GateConfigError(f"{where}.name: duplicate gate name {raw['name']!r}")
        seen.add(raw["name"])
        broken = kind.rules(raw)
        if broken:
            raise GateConfigError(f"{where}.{broken}")
        queries: dict[str, str] = {}
        required_roles = kind.schema["properties"]["queries"]["required"]
        for role, query in raw["queries"].items():
            if isinstance(query, str):
                queries[role] = query.strip()
            elif profile in query:
                queries[role] = query[profile].strip()
            elif role not in required_roles:
                continue  # an optional role this profile has no query for
            else:
                raise GateConfigError(
                    f"{where}.queries.{role}: no query for profile {profile!r} (has {sorted(query)})"
                )
        params = dict(kind.defaults)
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


__all__ = [
    "ARMS",
    "DEFAULT_GATE_FILE",
    "PROFILES",
    "RESERVED_VARIABLES",
    "GateConfig",
    "GateConfigError",
    "GateSpec",
    "load_gate_file",
    "parse_gate_document",
    "promql_duration",
    "render",
    "template_variables",
]
