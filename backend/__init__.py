"""Embedded SGLang-compatible VLM backend: an HTTP front process and TP scheduler ranks in a gloo group.

Run it with `python -m backend --model-path NAME --tp-size N --port P --enable-metrics`.
"""
