"""Sans-I/O protocol core: wire formats, cryptographic protocols, state machines.

Nothing here touches sockets, files, asyncio, the wall clock or a global RNG; time is
passed in and randomness comes from the operating system through ``cryptography``.
"""

__all__ = [
    "devices",
    "encoding",
    "errors",
    "keys",
    "mls",
    "padding",
    "pqxdh",
    "prekeys",
    "primitives",
    "provisioning",
    "ratchet",
    "safety",
    "sealed",
    "session",
    "sphinx",
    "submission",
]
