"""An asyncio SOCKS5 client connector (RFC 1928), for Tor and other SOCKS proxies.

RFC 1928 sections 3-6: method negotiation, then a CONNECT request naming the target by
domain name (so name resolution happens at the proxy: with Tor, DNS does not leak),
then the reply with the bound address. RFC 1929: username/password sub-negotiation;
Tor uses distinct credentials to put connections on distinct circuits
(IsolateSOCKSAuth). The result is an ordinary ``(StreamReader, StreamWriter)`` pair, so
any Veil connection can go through the proxy: ``connect = socks5_connector(url)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from urllib.parse import unquote, urlsplit

from veil.mixnet.errors import SocksError
from veil.mixnet.transport import Connector

VERSION = 5
NO_AUTH = 0x00
USERNAME_PASSWORD = 0x02
NO_ACCEPTABLE = 0xFF
CONNECT = 0x01
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _target(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise SocksError("host name too long for SOCKS5") from None
        address = bytes([ATYP_DOMAIN, len(name)]) + name
    else:
        address = bytes([ATYP_IPV4 if ip.version == 4 else ATYP_IPV6]) + ip.packed
    return address + struct.pack(">H", port)


async def _negotiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     host: str, port: int, auth: tuple[str, str] | None) -> None:
    methods = bytes([USERNAME_PASSWORD]) if auth else bytes([NO_AUTH])
    writer.write(bytes([VERSION, len(methods)]) + methods)
    version, method = await reader.readexactly(2)
    if version != VERSION:
        raise SocksError("proxy does not speak SOCKS5")
    if method == NO_ACCEPTABLE or method != methods[0]:
        raise SocksError("proxy accepted none of our authentication methods")
    if method == USERNAME_PASSWORD:
        assert auth is not None
        user, password = (part.encode() for part in auth)
        if not (0 < len(user) < 256 and 0 < len(password) < 256):
            raise SocksError("SOCKS5 username and password are 1 to 255 bytes")
        writer.write(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        _, status = await reader.readexactly(2)
        if status != 0:
            raise SocksError("proxy rejected the username/password")
    writer.write(bytes([VERSION, CONNECT, 0]) + _target(host, port))
    version, reply, _, atyp = await reader.readexactly(4)
    if version != VERSION:
        raise SocksError("malformed SOCKS5 reply")
    if reply != 0:
        raise SocksError(f"proxy: {_REPLIES.get(reply, f'error {reply}')}")
    if atyp == ATYP_IPV4:
        await reader.readexactly(4 + 2)
    elif atyp == ATYP_IPV6:
        await reader.readexactly(16 + 2)
    elif atyp == ATYP_DOMAIN:
        (length,) = await reader.readexactly(1)
        await reader.readexactly(length + 2)
    else:
        raise SocksError("malformed SOCKS5 reply")


async def socks5_connect(proxy_host: str, proxy_port: int, host: str, port: int, *,
                         auth: tuple[str, str] | None = None, timeout: float = 30.0
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to ``host:port`` through the SOCKS5 proxy at ``proxy_host:proxy_port``."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(proxy_host, proxy_port), timeout)
    except (TimeoutError, OSError) as exc:
        raise SocksError(f"cannot reach SOCKS5 proxy: {type(exc).__name__}") from exc
    try:
        await asyncio.wait_for(_negotiate(reader, writer, host, port, auth), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        writer.close()
        raise SocksError(f"SOCKS5 negotiation failed: {type(exc).__name__}") from exc
    except SocksError:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
        raise
    return reader, writer


def parse_proxy_url(url: str) -> tuple[str, int, tuple[str, str] | None]:
    """``socks5://[user:pass@]host:port`` (``socks5h`` accepted) -> host, port, auth."""
    parts = urlsplit(url)
    if parts.scheme not in ("socks5", "socks5h") or not parts.hostname:
        raise SocksError(f"proxy must be socks5://[user:pass@]host:port, got {url!r}")
    try:
        port = parts.port or 1080
    except ValueError as exc:
        raise SocksError("bad proxy port") from exc
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return parts.hostname, port, auth


def socks5_connector(url: str) -> Connector:
    """A :data:`~veil.mixnet.transport.Connector` that goes through the proxy at ``url``."""
    proxy_host, proxy_port, auth = parse_proxy_url(url)

    async def connect(host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await socks5_connect(proxy_host, proxy_port, host, port, auth=auth)

    return connect

__all__ = [
    "parse_proxy_url",
    "socks5_connect",
    "socks5_connector",
]
