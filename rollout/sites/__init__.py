"""Where a rollout or a CI gate runs (`base.Site`, a few parts), one module per place, found by name.

A site kind is the module `rollout/sites/<kind>.py` with a `SITE = SiteKind("<kind>", ...)`: a new site
is that one file (and its test); nothing here lists the kinds (`infra.registry` finds them). The
command's flags pick the kind: the one whose `applies(args)` holds, else the one without `applies` (local).
"""

from __future__ import annotations

import argparse

from infra.registry import kind_names, load_kind
from rollout.sites.base import Site, SiteKind


def site_kind(name: object) -> SiteKind:
    kind = load_kind(__name__, name, "SITE", SiteKind, "site")
    if kind is None:
        raise ValueError(f"unknown site kind {name!r} (known: {', '.join(known_site_kinds())})")
    return kind


def known_site_kinds() -> list[str]:
    return kind_names(__name__, __path__, "SITE", SiteKind, "site")


def site_kind_for(args: argparse.Namespace) -> SiteKind:
    """The site kind the command's flags ask for; the one without `applies` when none does."""
    kinds = [site_kind(name) for name in known_site_kinds()]
    asked = [kind for kind in kinds if kind.applies is not None and kind.applies(args)]
    if len(asked) > 1:
        raise ValueError(f"the options ask for more than one site: {', '.join(k.name for k in asked)}")
    fallback = [kind for kind in kinds if kind.applies is None]
    if not asked and len(fallback) != 1:
        raise ValueError(f"no site asked for and {len(fallback)} site kinds to fall back on")
    return (asked or fallback)[0]


def site_from_args(args: argparse.Namespace, *, needs_prometheus: bool, canary_flag: str = "canary") -> Site:
    """The site the command's flags (and environment) describe, built by its kind."""
    return site_kind_for(args).from_args(args, needs_prometheus=needs_prometheus, canary_flag=canary_flag)
