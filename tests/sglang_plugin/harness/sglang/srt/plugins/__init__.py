"""Harness version of sglang's general-plugin loading: entry points of group `sglang.srt.plugins`, each
called once per process; an Exception from a plugin is logged and swallowed, as upstream does."""

import logging
from importlib.metadata import entry_points

GENERAL_PLUGINS_GROUP = "sglang.srt.plugins"
log = logging.getLogger(__name__)
_loaded = False


def load_plugins():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=GENERAL_PLUGINS_GROUP):
        try:
            ep.load()()
        except Exception:
            log.exception("Failed to execute general plugin: %s", ep.name)
