"""Test harness package (see the harness README)."""
