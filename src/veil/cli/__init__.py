"""Command-line programs (thin: they call the client, server and mixnet layers)."""

__all__ = [
    "catalog",
    "demo",
    "entry",
    "i18n",
    "main",
    "messaging",
    "mix",
    "relay",
    "serve",
]
