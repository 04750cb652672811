"""The batched-broadcast sglang build: our code loaded into every sglang scheduler process.

Registered under sglang's plugin entry point group `sglang.srt.plugins` (see `entry.load`). When
SGLANG_MM_INPUT_MODE names a mode, it checks the installed sglang against `manifest.MANIFEST` and hooks
`Scheduler` so that TP ranks obtain multimodal inputs through the shared `mminputs` strategies, once per
received batch. See docs/sglang_plugin.md.
"""

from typing import Any

from .manifest import MANIFEST, SGLANG_VERSION, IncompatibleSglang, check_runtime, check_sources

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "MODE_ENV",
    "SGLANG_VERSION",
    "IncompatibleSglang",
    "PluginConfig",
    "PluginConfigError",
    "check_runtime",
    "check_sources",
    "config_from_env",
]

# The settings import mminputs, and with it torch: loaded on first use, so that the compatibility check
# (`python -m sglang_plugin check`) runs on any Python with sglang's source, torch or not (the candidate
# image's entrypoint runs it; tests/images runs it on a base with sglang's wheel and no GPU stack).
_CONFIG_NAMES = frozenset({"CACHE_ENV", "MODE_ENV", "PluginConfig", "PluginConfigError", "config_from_env"})


def __getattr__(name: str) -> Any:
    if name in _CONFIG_NAMES:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
