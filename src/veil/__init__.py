"""Veil: self-hostable private communication (see docs/ARCHITECTURE.md)."""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cli",
    "client",
    "core",
    "mixnet",
    "server",
]
