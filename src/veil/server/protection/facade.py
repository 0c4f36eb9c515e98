"""One object holding every protection layer of a server process (docs/protection.md).

Built by :func:`open_protection` once storage is open, closed after the listeners
stop. Each layer is a component of its own module; this module only wires them
together: the event hub first (every layer emits on it), then the layers that
subscribe to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from veil.server.config import ServerConfig
from veil.server.errors import NotAvailable
from veil.server.protection.addresses import NetworkList
from veil.server.protection.audit import AuditLog, ServerKeySigner
from veil.server.protection.blocks import BlockList
from veil.server.protection.connections import ConnectionGuard
from veil.server.protection.events import EventHub
from veil.server.protection.metrics import Metrics
from veil.server.protection.network import NetworkPolicy
from veil.server.protection.policy import LimiterStore, RateLimits
from veil.server.protection.pow import ProofOfWork
from veil.server.protection.rules import Detector
from veil.server.protection.webhook import Webhook
from veil.server.storage.base import Storage

log = logging.getLogger("veil.server.protection")


class Protection:
    """The protection layers of one server process."""

    def __init__(self, config: ServerConfig, storage: Storage,
                 clock: Callable[[], float] = time.monotonic,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock
        self.clock_ms = clock_ms
        self.events = EventHub(clock)
        # Subscribes first: every event is counted, whatever a later subscriber does.
        self.metrics = Metrics(self.events, clock)
        # Audit layer (issue 13 §5): the hash-chained log of security events and admin
        # actions; its rotating key also makes the keyed hashes of alerts and blocks.
        self.audit = AuditLog(storage, ServerKeySigner(config.data_dir), config.audit,
                              config.data_dir, clock_ms, clock=clock)
        self.audit.attach(self.events)
        # Application layer (issue 13 §2): token buckets and registration proof of work.
        self.limits = RateLimits(config.limits, self.events, clock,
                                 exempt=NetworkList(config.network.exempt, "network.exempt")
                                 .contains, queue_size=config.max_queue_per_device)
        self.pow = ProofOfWork(config.limits, clock, clock_ms)
        self._limiter_store = LimiterStore(self.limits, storage,
                                           config.data_dir / "protection" / "limits.json",
                                           clock_ms)
        # Detection layer (issue 13 §3): rules over the hub's events, automatic blocks,
        # alerts to the webhook (the log, metrics and audit log subscribe to ALERT).
        self.blocks = BlockList(storage, self.events, config.rules, clock, clock_ms,
                                keyed=self._keyed, is_exempt=self._is_exempt)
        self.detector = Detector(config.rules, self.events, self.blocks, clock, clock_ms,
                                 keyed=self._keyed)
        self.webhook = Webhook(config.webhook, self.events)
        # Network layer (issue 13 §1): CIDR lists, per-address caps and timeouts at
        # the listener (runner.py's GuardedSite); blocked addresses are refused at accept.
        self.network = NetworkPolicy(config.network, storage, clock_ms)
        self.connections = ConnectionGuard(self.network, self.events, clock)
        self.connections.blocked_for = self.blocks.blocked_for
        self.network.on_change.append(self.connections.close_denied)
        # Reads the configuration file again (SIGHUP, ``veil admin reload``); set by
        # runner.serve, which knows the file and the command line's overrides.
        self.config_loader: Callable[[], ServerConfig] | None = None

    def _keyed(self, value: str) -> str:
        """The keyed hash standing for an address in alerts and blocks: the audit log's
        (a key kept under DATA, rotated), so alerts, blocks and audit records agree."""
        return self.audit.keyed(value)

    def _is_exempt(self, key: str) -> bool:
        # The network policy's list (it follows SIGHUP reloads); asked only on a block.
        return self.network.is_exempt(key)

    async def open(self) -> None:
        """Load what the layers keep in storage (blocks, runtime rules, limiter state,
        the audit chain's head) and start their background tasks."""
        await self.audit.open()  # first: the start is recorded before anything else
        await self._limiter_store.open()
        await self.network.open()
        await self.blocks.open()
        # A block drops what the address already holds, not only what it opens next.
        self.blocks.on_block(self.connections.close_address)
        self.webhook.start()

    def reload(self, config: ServerConfig | None = None) -> dict[str, object]:
        """Apply the reloadable sections of a new configuration (``[network]``,
        ``[limits]`` and ``[rules]``): the file read again by :attr:`config_loader`
        unless given. A bad file raises ConfigError and changes nothing."""
        if config is None:
            if self.config_loader is None:
                raise NotAvailable("this server was started without a configuration file "
                                   "to reload")
            config = self.config_loader()
        self.network.reload(config.network)  # first: it validates its lists
        self.limits.reload(config.limits)  # its rates were checked when the file was read
        self.limits.set_exempt(self.network.is_exempt)
        self.detector.reload(config.rules)
        self.audit.record("config.reload", sections="network,limits,rules")
        log.info("configuration reloaded")
        return {"network": self.network.describe()}

    async def close(self) -> None:
        """Stop background tasks and save what must outlive the process."""
        await self._limiter_store.close()
        await self.webhook.stop()
        self.detector.close()
        await self.blocks.close()
        self.connections.close()
        await self.audit.close()  # last: the stop, then a final signed checkpoint


async def open_protection(config: ServerConfig, storage: Storage,
                          clock: Callable[[], float] = time.monotonic,
                          clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                          ) -> Protection:
    protection = Protection(config, storage, clock, clock_ms)
    await protection.open()
    return protection


__all__ = [
    "Protection",
    "open_protection",
]
