"""Security events: what the server tells its detection, monitoring and audit layers.

Every layer that sees something worth counting (a failed authentication, a refused
connection, a malformed frame, a rate-limited request) emits one :class:`SecurityEvent`
on the :class:`EventHub`; the intrusion rules, the metrics and the audit log subscribe.
An event carries the *source* — the client's address key (:mod:`.addresses`), which
never leaves the process in clear: alerts, logs and audit records show it only as a
keyed hash — and a few small fields (a route template, a rate-limit class, a rule
name). It never carries message content, tokens or full identifiers; a target account
is passed as a keyed hash too (``target``), so draining one person's keys can be seen
without naming them.

Emitting is synchronous and cheap (a loop over a few callbacks); a subscriber that
needs I/O queues the work itself. A subscriber that raises is logged and kept out of
the emitter's way: a fault in a counter must not fail a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger("veil.server.protection")

# The kinds (stable names: rules, metrics labels and the documentation use them).
AUTH_FAILURE: Final = "auth_failure"  # 401 on credentials
REGISTRATION: Final = "registration"  # an account created
REGISTRATION_REFUSED: Final = "registration_refused"  # bad invite or proof of work
KEY_CLAIM: Final = "key_claim"  # a prekey bundle claimed (target: keyed hash)
KEY_PACKAGE_CLAIM: Final = "key_package_claim"  # an MLS KeyPackage claimed
MESSAGE_SUBMIT: Final = "message_submit"  # envelopes submitted (count in fields)
RATE_LIMITED: Final = "rate_limited"  # a request or frame refused by a bucket
MALFORMED: Final = "malformed"  # a body or frame that failed to decode
UNKNOWN_ROUTE: Final = "unknown_route"  # 404/405 from the fallback route
OVERSIZED: Final = "oversized"  # 413, or a frame over the limit
CONNECTION_REFUSED: Final = "connection_refused"  # cap, deny list or block at accept
SLOW_CONNECTION: Final = "slow_connection"  # still in its headers after slow_after_s
TIMEOUT: Final = "timeout"  # closed for silence or slowness (fields: phase)
BLOCKED_REQUEST: Final = "blocked_request"  # a request of a blocked address
ALERT: Final = "alert"  # a rule fired (fields: rule, count, window_s, blocked_s)
BLOCK_LIFTED: Final = "block_lifted"  # by the operator or by expiry

KINDS: Final = (
    AUTH_FAILURE, REGISTRATION, REGISTRATION_REFUSED, KEY_CLAIM, KEY_PACKAGE_CLAIM,
    MESSAGE_SUBMIT, RATE_LIMITED, MALFORMED, UNKNOWN_ROUTE, OVERSIZED,
    CONNECTION_REFUSED, SLOW_CONNECTION, TIMEOUT, BLOCKED_REQUEST, ALERT, BLOCK_LIFTED,
)


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    kind: str
    source: str | None  # the address key, or None when no client caused it
    at: float  # monotonic seconds (the hub's clock)
    fields: dict[str, Any] = field(default_factory=dict)
    count: int = 1  # events of one kind folded into one emit (a batch of envelopes)


Subscriber = Callable[[SecurityEvent], None]


class EventHub:
    """Synchronous fan-out of :class:`SecurityEvent` to subscribers, in subscription
    order. A subscriber may name the kinds it wants: the busiest kind (one
    ``message_submit`` per send frame) then reaches only those that count it, and an
    event nobody wants is never built."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._subscribers: list[tuple[Subscriber, frozenset[str] | None]] = []
        self._by_kind: dict[str, tuple[Subscriber, ...]] = {}

    def subscribe(self, subscriber: Subscriber,
                  kinds: Iterable[str] | None = None) -> None:
        """Call ``subscriber`` for every event, or only for those of ``kinds``."""
        self._subscribers.append((subscriber, None if kinds is None else frozenset(kinds)))
        self._by_kind = {}

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers = [(s, k) for s, k in self._subscribers if s != subscriber]
        self._by_kind = {}

    def _of_kind(self, kind: str) -> tuple[Subscriber, ...]:
        subscribers = self._by_kind.get(kind)
        if subscribers is None:
            subscribers = tuple(s for s, kinds in self._subscribers
                                if kinds is None or kind in kinds)
            if len(self._by_kind) < 4 * len(KINDS):  # kinds come from code: few
                self._by_kind[kind] = subscribers
        return subscribers

    def wanted(self, kind: str) -> bool:
        """Whether anyone subscribes to ``kind`` (so a caller can skip costly fields)."""
        return bool(self._of_kind(kind))

    def emit(self, kind: str, source: str | None = None, *, count: int = 1,
             **fields: Any) -> SecurityEvent | None:
        """Hand the event to its subscribers; the event, or None when nobody wanted it."""
        subscribers = self._of_kind(kind)
        if not subscribers:
            return None
        event = SecurityEvent(kind, source, self.clock(), fields, count)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("security event subscriber failed on %s", kind)
        return event


__all__ = [
    "ALERT",
    "AUTH_FAILURE",
    "BLOCKED_REQUEST",
    "BLOCK_LIFTED",
    "CONNECTION_REFUSED",
    "KEY_CLAIM",
    "KEY_PACKAGE_CLAIM",
    "KINDS",
    "MALFORMED",
    "MESSAGE_SUBMIT",
    "OVERSIZED",
    "RATE_LIMITED",
    "REGISTRATION",
    "REGISTRATION_REFUSED",
    "SLOW_CONNECTION",
    "TIMEOUT",
    "UNKNOWN_ROUTE",
    "EventHub",
    "SecurityEvent",
    "Subscriber",
]
