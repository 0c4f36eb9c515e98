"""Business rules of the server: no HTTP types here, only storage, bus and clock."""

__all__ = [
    "accounts",
    "keys",
    "messages",
]
