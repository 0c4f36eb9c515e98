"""Command-line programs (thin: they call the client, server and mixnet layers)."""

__all__ = [
    "demo",
    "entry",
    "main",
    "messaging",
    "mix",
    "relay",
    "serve",
]
