"""Who may connect, and which address a request is counted against (issue 13 §1).

:class:`NetworkPolicy` holds the ``[network]`` CIDR lists (``ipaddress``, IPv4 and IPv6):
``allow`` (empty: everyone not denied), ``deny``, ``proxies`` (many people behind one
address: larger caps), ``forwarded_for_from`` (reverse proxies whose X-Forwarded-For is
believed) and ``exempt`` (never rate-limited or blocked; timeouts still apply). The
operator adds deny rules at run time (``veil admin deny``, the dashboard): they are
kept in storage (``network_rules_*``) and survive a restart. SIGHUP and ``veil admin
reload`` swap the configured lists without a restart (:meth:`NetworkPolicy.reload`).

Order of the checks in :meth:`NetworkPolicy.admits`: a denied address (configured or
runtime) is refused, whoever it is; an exempt address passes the allow list (the
operator's own machine must still reach its server when ``allow`` names only the
office network); anyone else must be in ``allow`` when it is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from veil.server.protection.addresses import (
    NetworkList,
    address_key,
    parse_address,
    parse_network,
)
from veil.server.protection.settings import NetworkSettings
from veil.server.storage.base import Storage

log = logging.getLogger("veil.server.protection")

FORWARDED_FOR = "X-Forwarded-For"
DENY = "deny"
# Runtime rules are typed in by an operator, one at a time: a bound that is never
# reached by hand, and keeps a script gone wrong from growing the list without end.
MAX_RUNTIME_RULES = 10_000


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


class _Peer(Protocol):
    """What :meth:`NetworkPolicy.client_key` reads of a request (aiohttp's, or a test's)."""

    @property
    def remote(self) -> str | None: ...

    @property
    def headers(self) -> _Headers: ...


class NetworkPolicy:
    """The network lists of ``[network]`` plus the runtime deny rules."""

    def __init__(self, settings: NetworkSettings, storage: Storage | None = None,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.storage = storage
        self.clock_ms = clock_ms
        self._runtime: dict[str, None] = {}  # insertion-ordered set of normalized CIDRs
        self._runtime_list = NetworkList(())
        self._warned_forwarded = False
        # Called after the lists changed (the connection guard drops what is now denied).
        self.on_change: list[Callable[[], object]] = []
        self.settings = settings
        self._apply(settings)

    def _apply(self, settings: NetworkSettings) -> None:
        # Parsed all at once before anything is replaced: a bad reload changes nothing.
        allow = NetworkList(settings.allow, "network.allow")
        deny = NetworkList(settings.deny, "network.deny")
        proxies = NetworkList((*settings.proxies, *settings.forwarded_for_from),
                              "network.proxies")
        forwarded = NetworkList(settings.forwarded_for_from, "network.forwarded_for_from")
        exempt = NetworkList(settings.exempt, "network.exempt")
        self.settings = settings
        self._allow, self._deny, self._proxies = allow, deny, proxies
        self._forwarded, self._exempt = forwarded, exempt

    def reload(self, settings: NetworkSettings) -> None:
        """Use new ``[network]`` settings (runtime rules are kept); a bad list raises
        ConfigError and leaves the old ones in force."""
        self._apply(settings)
        self._changed()
        log.info("network rules reloaded: %d allow, %d deny, %d runtime deny, %d proxies",
                 len(self._allow), len(self._deny), len(self._runtime), len(self._proxies))

    def _changed(self) -> None:
        for callback in self.on_change:
            try:
                callback()
            except Exception:
                log.exception("a network rule change callback failed")

    # ---- the checks -----------------------------------------------------------------
    def denied(self, ip: str | None) -> bool:
        return self._deny.contains(ip) or self._runtime_list.contains(ip)

    def admits(self, ip: str | None) -> bool:
        """Whether a peer at ``ip`` may connect (module docstring: the order)."""
        if self.denied(ip):
            return False
        if not self._allow:
            return True
        return self._allow.contains(ip) or self._exempt.contains(ip)

    def is_proxy(self, ip: str | None) -> bool:
        """A listed proxy (or a reverse proxy in ``forwarded_for_from``): larger caps."""
        return self._proxies.contains(ip)

    def is_exempt(self, ip: str | None) -> bool:
        return self._exempt.contains(ip)

    def large_caps(self, ip: str | None) -> bool:
        """Proxies and exempt addresses get the ``proxy_*`` caps."""
        return self._proxies.contains(ip) or self._exempt.contains(ip)

    def client_ip(self, request: _Peer) -> str | None:
        """The client's address: the peer, or for a peer in ``forwarded_for_from`` the
        last X-Forwarded-For hop not itself a trusted proxy (the hops before it are
        whatever the client wrote)."""
        peer = request.remote
        forwarded = request.headers.get(FORWARDED_FOR)
        if forwarded is None:
            return peer
        if not self._forwarded.contains(peer):
            if not self._warned_forwarded and self._exempt.contains(peer):
                # An exempt reverse proxy not listed as one: every client behind it
                # shares its exemption. Said once; the address is not logged.
                self._warned_forwarded = True
                log.warning("an exempt peer sends %s but is not in network."
                            "forwarded_for_from: every client behind it is exempt; "
                            "list the proxy in forwarded_for_from", FORWARDED_FOR)
            return peer
        hops = [hop.strip() for hop in forwarded.split(",")[-16:]]
        for hop in reversed(hops):
            if parse_address(hop) is None:
                break  # garbage: nothing before it can be believed either
            if not self._forwarded.contains(hop):
                return hop
        return peer

    def client_key(self, request: _Peer) -> str:
        """The address key (:func:`address_key`) the request is counted against."""
        return address_key(self.client_ip(request))

    # ---- runtime rules (``veil admin deny``) ------------------------------------------
    async def open(self) -> None:
        """Load the runtime rules kept in storage."""
        if self.storage is None:
            return
        for rule in await self.storage.network_rules():
            if rule.action == DENY:
                self._runtime[str(parse_network(rule.cidr))] = None
        self._runtime_list = NetworkList(self._runtime)

    async def deny_runtime(self, cidr: str) -> str:
        """Deny ``cidr`` from now on (kept across restarts); returns it normalized.
        Raises ConfigError for a text that is no CIDR."""
        text = str(parse_network(cidr, "deny"))
        if text not in self._runtime and len(self._runtime) >= MAX_RUNTIME_RULES:
            raise ValueError(f"at most {MAX_RUNTIME_RULES} runtime rules")
        if self.storage is not None:
            await self.storage.network_rules_add(text, DENY, self.clock_ms())
        self._runtime[text] = None
        self._runtime_list = NetworkList(self._runtime)
        self._changed()
        return text

    async def remove_runtime(self, cidr: str) -> bool:
        """Remove a runtime rule; False when there was none."""
        text = str(parse_network(cidr, "deny"))
        removed = False
        if self.storage is not None:
            removed = await self.storage.network_rules_remove(text)
        if text in self._runtime:
            del self._runtime[text]
            removed = True
            self._runtime_list = NetworkList(self._runtime)
        return removed

    def runtime_rules(self) -> list[str]:
        """The runtime deny rules, oldest first."""
        return list(self._runtime)

    def describe(self) -> dict[str, object]:
        """Counts for the admin status (no address in clear but the operator's own)."""
        return {"allow": len(self._allow), "deny": len(self._deny),
                "runtime_deny": len(self._runtime), "proxies": len(self._proxies),
                "exempt": len(self._exempt)}


__all__ = [
    "FORWARDED_FOR",
    "NetworkPolicy",
]
