"""Kinds found by name: the module `<package>.<name>` and the one attribute it registers (`KIND`, `ROUTER`,
`SITE`).

A package of kinds (`gates/kinds/`, `rollout/routers/`, `rollout/sites/`) lists nothing: a new kind is its
module, and the registry object it defines is named after that module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


K = TypeVar("K", bound=_Named)


def load_kind(package: str, name: object, attribute: str, kind_type: type[K], noun: str) -> K | None:
    """`<package>.<name>.<attribute>` when that module exists and defines one of `kind_type`, else None.

    A module that exists but fails to import (one of its own imports is missing) raises: it is a broken
    kind, not an unknown one. `noun` names the kind in that error ("gate", "router", "site").
    """
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        return None
    module_name = f"{package}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    kind = getattr(module, attribute, None)
    if not isinstance(kind, kind_type):
        return None
    if kind.name != name:
        raise ValueError(
            f"{module_name}.{attribute} is named {kind.name!r}; a {noun} kind is named after its module"
        )
    return kind


def kind_names(package: str, path: Iterable[str], attribute: str, kind_type: type[K], noun: str) -> list[str]:
    """The names of the kinds in the package at `path` (its `__path__`), sorted."""
    return sorted(
        module.name
        for module in pkgutil.iter_modules(path)
        if load_kind(package, module.name, attribute, kind_type, noun) is not None
    )
