"""SOCKS5 for every client connection (``--proxy socks5://HOST:PORT``), e.g. through Tor.

Names are resolved by the proxy (``socks5h`` semantics, ``rdns=True``), so the local
resolver never sees the server's name; with Tor this keeps DNS inside the circuit.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp_socks import ProxyConnector, ProxyType

from veil.client.errors import ClientError


def socks_connector(proxy_url: str) -> ProxyConnector:
    parts = urlsplit(proxy_url)
    if parts.scheme not in ("socks5", "socks5h") or not parts.hostname or not parts.port:
        raise ClientError(f"proxy must look like socks5://HOST:PORT, not {proxy_url!r}")
    return ProxyConnector(proxy_type=ProxyType.SOCKS5, host=parts.hostname, port=parts.port,
                          username=parts.username, password=parts.password, rdns=True)

__all__ = [
    "socks_connector",
]
