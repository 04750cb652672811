"""Harness: the multimodal config bag that sglang publishes from its server args."""

from types import SimpleNamespace

_MM = SimpleNamespace(enable_broadcast_mm_inputs_process=False, mm_feature_transport=None)


def publish_mm(**values):
    for key, value in values.items():
        setattr(_MM, key, value)


def get_mm():
    return _MM
