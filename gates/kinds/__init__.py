"""The gate kinds, one file each; `KINDS` maps a gate file's `kind:` to its `GateKind`.

Adding a kind: a new file here defining `KIND = GateKind(...)` (schema, defaults, evaluate, checks, panel) and
its entry below, plus its test; nothing else changes (docs/architecture.md).
"""

from gates.kinds import error_rate, latency_quantile, memory_leak, threshold, throughput
from gates.kinds.base import GateKind

KINDS: dict[str, GateKind] = {
    kind.name: kind
    for kind in (threshold.KIND, latency_quantile.KIND, throughput.KIND, error_rate.KIND, memory_leak.KIND)
}

__all__ = ["KINDS", "GateKind"]
