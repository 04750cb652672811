"""The plugin's settings, read from the environment of each sglang process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mminputs import DEFAULT_CACHE_CAPACITY, MMMode, parse_mode

MODE_ENV = "SGLANG_MM_INPUT_MODE"
CACHE_ENV = "SGLANG_MM_INPUT_CACHE_SIZE"
# Values of MODE_ENV that leave sglang exactly as upstream ships it (the plugin installs nothing).
OFF_VALUES = frozenset({"", "off", "upstream", "none"})


class PluginConfigError(ValueError):
    """A plugin environment variable holds a value the plugin cannot use."""


@dataclass(frozen=True)
class PluginConfig:
    """`mode` None: the plugin is off and touches nothing."""

    mode: MMMode | None
    cache_capacity: int = DEFAULT_CACHE_CAPACITY

    @property
    def enabled(self) -> bool:
        return self.mode is not None


def config_from_env(environ: Mapping[str, str] | None = None) -> PluginConfig:
    env = os.environ if environ is None else environ
    raw_mode = env.get(MODE_ENV, "")
    if raw_mode.strip().lower() in OFF_VALUES:
        mode = None
    else:
        try:
            mode = parse_mode(raw_mode)
        except ValueError as exc:
            raise PluginConfigError(
                f"{MODE_ENV}={raw_mode!r}: {exc} (or 'off' for upstream sglang)"
            ) from None
    raw_cap = env.get(CACHE_ENV, "").strip()
    capacity = DEFAULT_CACHE_CAPACITY
    if raw_cap:
        try:
            capacity = int(raw_cap)
        except ValueError:
            capacity = 0
        if capacity < 1:
            raise PluginConfigError(f"{CACHE_ENV}={raw_cap!r}: expected a positive integer number of entries")
    return PluginConfig(mode=mode, cache_capacity=capacity)
