"""Client addresses as the protection layers count them, and CIDR lists (``ipaddress``).

An *address key* is the text every per-address cap, bucket, rule and block is keyed
by: an IPv4 address as it is, an IPv6 address as its /64 network (one subscriber
usually holds a whole /64, so per-address limits on single IPv6 addresses would be
sidestepped by changing the low bits). IPv4-mapped IPv6 addresses count as IPv4.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from veil.server.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"  # a peer without an IP address (a Unix socket, a test transport)
# Parsed answers kept per address text: parsing with ``ipaddress`` costs microseconds,
# and every accepted (or refused) connection asks several times. Bounded; emptied when
# full, which costs only a re-parse.
CACHE_SIZE = 8192
_keys: dict[str, str] = {}


def parse_address(text: str) -> IPAddress | None:
    """The IP address ``text`` names (IPv4-mapped IPv6 unwrapped), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(text: str | None) -> str:
    """The key of a peer address (see the module docstring); ``UNKNOWN`` if none."""
    if not text:
        return UNKNOWN
    key = _keys.get(text)
    if key is None:
        key = _address_key(text)
        if len(_keys) >= CACHE_SIZE:
            _keys.clear()
        _keys[text] = key
    return key


def _address_key(text: str) -> str:
    address = parse_address(text)
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def parse_network(text: str, where: str = "network") -> IPNetwork:
    """A CIDR (or a bare address, as /32 or /128); a bad one is a ConfigError."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an IP address or CIDR network") from None


class NetworkList:
    """A set of CIDR networks, matched against an address (IPv4 and IPv6)."""

    __slots__ = ("_hits", "_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[str], where: str = "network") -> None:
        parsed = [parse_network(n, where) for n in networks]
        self.networks: tuple[IPNetwork, ...] = tuple(parsed)
        self._v4 = [n for n in parsed if isinstance(n, ipaddress.IPv4Network)]
        self._v6 = [n for n in parsed if isinstance(n, ipaddress.IPv6Network)]
        self._hits: dict[str, bool] = {}  # answers by address text (CACHE_SIZE)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def contains(self, text: str | None) -> bool:
        """Whether the address ``text`` (or the first address of a /64 key) is listed."""
        if not text or not self.networks:
            return False
        hit = self._hits.get(text)
        if hit is None:
            address = parse_address(text.split("/", 1)[0])
            pool = self._v4 if isinstance(address, ipaddress.IPv4Address) else self._v6
            hit = address is not None and any(address in network for network in pool)
            if len(self._hits) >= CACHE_SIZE:
                self._hits.clear()
            self._hits[text] = hit
        return hit

    def texts(self) -> list[str]:
        return [str(n) for n in self.networks]


__all__ = [
    "UNKNOWN",
    "NetworkList",
    "address_key",
    "parse_address",
    "parse_network",
]
