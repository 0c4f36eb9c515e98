"""Veil: self-hostable private communication (see docs/ARCHITECTURE.md)."""

__version__ = "0.1.0"
