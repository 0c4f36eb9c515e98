"""The settings of the protection layers (DESIGN.md, "Protection layers on the server").

One section of the server's TOML file per layer — ``[network]``, ``[limits]``,
``[rules]``, ``[audit]``, ``[admin]``, ``[webhook]`` — each a frozen dataclass below,
held by :class:`veil.server.config.ServerConfig`. A section's keys are its field names;
unknown keys and wrong types are configuration errors (``config.py`` checks them with
the same rules as the flat keys). Defaults are what a normal person never reaches
(docs/protection.md gives the reasoning for each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.server.errors import ConfigError


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{section}.{name} must be positive")


@dataclass(frozen=True)
class NetworkSettings:
    """``[network]``: who may connect, how many connections each address holds, and how
    long a connection may stay silent or slow (network layer)."""

    # CIDR lists (IPv4 and IPv6). ``allow`` empty: everyone not denied. Reloaded on
    # SIGHUP and by ``veil admin reload`` / ``veil admin deny``.
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # Known proxies and Tor exits: many people behind one address, so larger caps.
    proxies: tuple[str, ...] = ()
    # Peers whose X-Forwarded-For is believed (a reverse proxy in front of the server);
    # the client address is then the last hop that proxy adds.
    forwarded_for_from: tuple[str, ...] = ()
    # Never rate-limited or blocked (timeouts still apply): the operator's own machine.
    # Behind a reverse proxy on the same host, list it in forwarded_for_from too, or
    # every client shares its exemption (the server warns when it sees that).
    exempt: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Per-address connection caps (an IPv6 address counts as its /64).
    max_connections_per_address: int = 256
    max_websockets_per_address: int = 64
    max_sealed_websockets_per_address: int = 8
    proxy_max_connections_per_address: int = 20_000
    proxy_max_websockets_per_address: int = 20_000
    proxy_max_sealed_websockets_per_address: int = 900
    # Slow and idle connections: a new connection must send its first byte within
    # first_byte_timeout_s, and a request's headers must be complete header_timeout_s
    # after its first byte; a JSON body must arrive within body_timeout_s; between
    # requests a keep-alive connection may idle keepalive_timeout_s (above the 15 s
    # most HTTP clients keep an idle connection, so they never race a close).
    first_byte_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    # A connection still in its headers after slow_after_s counts as slow for the
    # detection layer (a slowloris is seen long before it times out).
    slow_after_s: float = 2.0
    # A sealed socket is closed after this long, busy or not (slots turn over).
    sealed_max_lifetime_s: float = 900.0
    # A device socket is pinged this often and closed when no pong comes within half
    # of it: a peer that vanished without a FIN does not hold its slot for ever.
    websocket_heartbeat_s: float = 60.0
    # Connections of blocked or denied addresses are held silent for tarpit_s before
    # their reset, as a firewall's DROP would leave them (a blocked client cannot retry
    # at full speed): at most tarpit_per_address of one address and tarpit_max in all,
    # beyond which they are reset at once. tarpit_max = 0 resets every one at once.
    tarpit_s: float = 5.0
    tarpit_per_address: int = 256
    tarpit_max: int = 4096

    def __post_init__(self) -> None:
        if self.tarpit_max < 0 or self.tarpit_per_address < 0:
            raise ConfigError("network.tarpit_max and network.tarpit_per_address must be "
                              "0 or more")
        _positive("network", max_connections_per_address=self.max_connections_per_address,
                  max_websockets_per_address=self.max_websockets_per_address,
                  max_sealed_websockets_per_address=self.max_sealed_websockets_per_address,
                  first_byte_timeout_s=self.first_byte_timeout_s,
                  header_timeout_s=self.header_timeout_s,
                  body_timeout_s=self.body_timeout_s,
                  keepalive_timeout_s=self.keepalive_timeout_s,
                  slow_after_s=self.slow_after_s,
                  sealed_max_lifetime_s=self.sealed_max_lifetime_s,
                  websocket_heartbeat_s=self.websocket_heartbeat_s,
                  tarpit_s=self.tarpit_s)


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: token buckets of the application layer. Each entry of ``rates``
    is ``"<class>.<key>" = "<count>/<seconds>s burst <n>"`` (for example
    ``"register.address" = "10/3600s burst 20"``); entries given replace the defaults of
    :mod:`veil.server.protection.policy` one by one."""

    enabled: bool = True
    rates: dict[str, str] = field(default_factory=dict)
    # Keys each bucket table holds at most (least recently used go first): memory is
    # O(1) per key and bounded in all.
    max_keys: int = 100_000
    # Registration proof-of-work (registration = "pow"): leading zero bits asked at
    # rest, and at most; the difficulty rises with registrations per minute.
    pow_min_bits: int = 14
    pow_max_bits: int = 24
    pow_challenge_ttl_s: int = 300

    def __post_init__(self) -> None:
        _positive("limits", max_keys=self.max_keys, pow_min_bits=self.pow_min_bits,
                  pow_challenge_ttl_s=self.pow_challenge_ttl_s)
        if not self.pow_min_bits <= self.pow_max_bits <= 32:
            raise ConfigError("limits.pow_max_bits must be between pow_min_bits and 32")
        # Each entry of rates is checked when the file is read, not at the first request.
        from veil.server.protection.policy import resolve  # (policy imports this module)
        resolve(self)


@dataclass(frozen=True)
class RuleSettings:
    """``[rules]``: the intrusion rules of the detection layer. Each entry of
    ``overrides`` is ``"<rule>.<setting>" = value`` (settings: threshold, window_s,
    block_s, enabled); the defaults are in :mod:`veil.server.protection.rules`."""

    enabled: bool = True
    overrides: dict[str, float] = field(default_factory=dict)
    # Repeat offenders: each block lasts twice the last, up to max_block_s; an address
    # with no block for offence_memory_s starts again at the rule's block_s.
    max_block_s: int = 7 * 24 * 3600
    offence_memory_s: int = 24 * 3600
    max_alerts_kept: int = 1000

    def __post_init__(self) -> None:
        _positive("rules", max_block_s=self.max_block_s,
                  offence_memory_s=self.offence_memory_s, max_alerts_kept=self.max_alerts_kept)


@dataclass(frozen=True)
class AuditSettings:
    """``[audit]``: the tamper-evident audit log (audit layer)."""

    # A checkpoint (the chain head signed by the server key) after this many records
    # or this many seconds, whichever comes first.
    checkpoint_every: int = 100
    checkpoint_interval_s: int = 300
    # The key of the keyed hashes that stand for identifiers is replaced after this
    # many days, so records older than that cannot be tied to a person any more.
    key_rotation_days: int = 30
    # Registrations are recorded as one count per interval, never one per account.
    registration_interval_s: int = 600
    # Records waiting for the writer at most; beyond, they are counted and the count is
    # recorded (``audit.dropped``) once there is room again.
    max_queue: int = 10_000

    def __post_init__(self) -> None:
        _positive("audit", checkpoint_every=self.checkpoint_every,
                  checkpoint_interval_s=self.checkpoint_interval_s,
                  key_rotation_days=self.key_rotation_days,
                  registration_interval_s=self.registration_interval_s,
                  max_queue=self.max_queue)


@dataclass(frozen=True)
class AdminSettings:
    """``[admin]``: the admin listener (metrics, health, dashboard, admin API)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, written to DATA/admin/address
    # Outside loopback the admin listener needs TLS (the server's certificate) unless
    # this is set.
    insecure_public: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("admin.port must be between 0 and 65535")


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhook]``: alerts POSTed as JSON to an operator's endpoint (optional)."""

    url: str = ""
    # A shared secret: each POST carries Veil-Signature, HMAC-SHA256 of the body.
    secret: str = ""
    timeout_s: float = 5.0
    max_queue: int = 1000
    max_attempts: int = 6

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError("webhook.url must be an http:// or https:// URL")
        _positive("webhook", timeout_s=self.timeout_s, max_queue=self.max_queue,
                  max_attempts=self.max_attempts)


# The TOML section of each ServerConfig field that holds one of the classes above.
SECTIONS: dict[str, type] = {
    "network": NetworkSettings,
    "limits": LimitSettings,
    "rules": RuleSettings,
    "audit": AuditSettings,
    "admin": AdminSettings,
    "webhook": WebhookSettings,
}

__all__ = [
    "SECTIONS",
    "AdminSettings",
    "AuditSettings",
    "LimitSettings",
    "NetworkSettings",
    "RuleSettings",
    "WebhookSettings",
]
