"""The batched-broadcast sglang build: our code loaded into every sglang scheduler process.

Registered under sglang's plugin entry point group `sglang.srt.plugins` (see `entry.load`). When
SGLANG_MM_INPUT_MODE names a mode, it checks the installed sglang against `manifest.MANIFEST` and hooks
`Scheduler` so that TP ranks obtain multimodal inputs through the shared `mminputs` strategies, once per
received batch. See docs/sglang_plugin.md.
"""

from .config import CACHE_ENV, MODE_ENV, PluginConfig, PluginConfigError, config_from_env
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
