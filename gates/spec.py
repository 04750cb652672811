"""Gate values: a gate as the file declares it (`GateSpec`), the resolved file (`GateConfig`), and the
query templates' `${variable}` rendering. The file's schema and loading live in `gates.config`; each
kind's parameters in `gates.kinds`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("local", "kubernetes")
ARMS = ("baseline", "canary")
RESERVED_VARIABLES = ("arm", "window")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GateConfigError(ValueError):
    """The gate file or the variables given for it are invalid; the message names the bad key."""


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


def traefik_backend_regex(namespace: str, service: str) -> str:
    """The series of one Service behind an HTTPRoute in Traefik's metrics (its `service` label): Traefik's
    Gateway API provider names a backendRef `<router>-svc-<namespace>-<Service>-<index>@kubernetesgateway`.
    Dots are escaped (the value is an RE2 for PromQL's `=~`); no other Service's name ends the same way."""
    name = f"{namespace}-{service}".replace(".", "\\.")
    return f".*-svc-{name}-[0-9]+@kubernetesgateway"
