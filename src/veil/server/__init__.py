"""The Veil server: accounts, key directory and sealed-sender message queue.

Layers: thin HTTP/WebSocket handlers (:mod:`veil.server.http`) → services without HTTP
types (:mod:`veil.server.services`) → a storage interface (:mod:`veil.server.storage`)
and a fan-out bus (:mod:`veil.server.bus`). The server never sees plaintext and stores
no sender for sealed envelopes. Run it with ``veil server``; see docs/server.md.
"""

__all__ = [
    "backup",
    "bus",
    "certificates",
    "config",
    "datadir_lock",
    "encoding",
    "errors",
    "http",
    "runner",
    "services",
    "storage",
]
