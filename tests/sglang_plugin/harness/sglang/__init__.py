"""Test harness stand-in for sglang (see ../README.md)."""
