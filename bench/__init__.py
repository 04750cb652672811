"""Benchmarks, one module each: `python -m bench.<name>` from the repository root (`make bench-*`).

Not product code: no product package imports it, and the wheel, images and chart leave it out.
"""
