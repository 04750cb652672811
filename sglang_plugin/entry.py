"""sglang's plugin entry point (group `sglang.srt.plugins`): runs in every sglang process at start.

sglang calls `load_plugins()` at the top of the server's main process, the DP controller, the detokenizer
and `run_scheduler_process` (before the Scheduler is constructed), and logs and swallows any Exception a
plugin raises. Refusals here therefore raise SystemExit, which it does not swallow: the process exits with
the message instead of serving without the change the canary is meant to measure.
"""

from __future__ import annotations

import importlib
import logging
import sys

from .config import PluginConfigError, config_from_env
from .hook import SchedulerBindings, install
from .manifest import SCHEDULE_BATCH, SCHEDULER, IncompatibleSglang, check_runtime, installed_sglang_version

log = logging.getLogger("sglang_plugin")


def load() -> None:
    """Check compatibility and hook the Scheduler class when SGLANG_MM_INPUT_MODE names a mode."""
    try:
        config = config_from_env()
    except PluginConfigError as exc:
        _refuse(str(exc))
    if not config.enabled:
        return  # off: upstream sglang, untouched
    if SCHEDULER not in sys.modules:
        # A process that never builds a Scheduler (the detokenizer): importing the scheduler module here
        # would only cost start-up time. Where schedulers run, sglang calls this from inside that module.
        return
    mismatches = check_runtime()
    if mismatches:
        _refuse(str(IncompatibleSglang(mismatches, installed_sglang_version())))
    modules = importlib.import_module(SCHEDULER), importlib.import_module(SCHEDULE_BATCH)
    install(SchedulerBindings.from_modules(*modules), config)


def _refuse(message: str):
    log.error("%s", message)
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(message)
