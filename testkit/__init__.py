"""Test kit shared by the tests and the benchmarks: stubs, synthetic data and multi-rank helpers.

Not product code: no product package imports it (tests/test_product_imports.py), the wheel leaves it out,
and neither the images nor the chart ship it. Import it from the repository root (pytest puts the root on
`sys.path`; run benchmarks as `python -m bench.<name>`).
"""
