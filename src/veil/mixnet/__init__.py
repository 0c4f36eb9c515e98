"""The anonymous-routing layer: a Loopix-style mixnet over Sphinx packets (asyncio).

``node`` (mix nodes), ``provider`` (the exit in front of the Veil server), ``client``
(Poisson sending with cover traffic), ``directory`` (the signed list of nodes),
``socks`` (SOCKS5 / Tor transport). See ``docs/mixnet.md``.
"""

from veil.mixnet.errors import (
    DirectoryError,
    FragmentError,
    MixnetError,
    QueueFull,
    SocksError,
    TransportError,
)

__all__ = [
    "DirectoryError",
    "FragmentError",
    "MixnetError",
    "QueueFull",
    "SocksError",
    "TransportError",
    "client",
    "directory",
    "errors",
    "fragment",
    "node",
    "provider",
    "sink",
    "socks",
    "transport",
]
