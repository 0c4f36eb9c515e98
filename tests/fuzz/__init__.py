"""Fuzz harnesses for every decoder of untrusted bytes (see tests/fuzz/README.md)."""
