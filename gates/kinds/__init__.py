"""The gate kinds, one file each; `KINDS` maps a gate file's `kind:` to its `GateKind`.

Adding a kind: a new file here, named after the kind, defining `KIND = GateKind(...)` (schema, defaults,
evaluate, checks, panel), plus its test; nothing else changes (docs/architecture.md). `base.py` holds what
kinds share and defines no kind.
"""

from gates.kinds.base import GateKind
from infra.registry import kind_names, load_kind


def _found() -> dict[str, GateKind]:
    kinds = {}
    for name in kind_names(__name__, __path__, "KIND", GateKind, "gate"):
        kind = load_kind(__name__, name, "KIND", GateKind, "gate")
        assert kind is not None  # kind_names lists only the modules that define one
        kinds[name] = kind
    return kinds


KINDS: dict[str, GateKind] = _found()

__all__ = ["KINDS", "GateKind"]
