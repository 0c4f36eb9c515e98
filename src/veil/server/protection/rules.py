"""The intrusion rules of the detection layer (issue 13 §3) and the :class:`Detector`.

The detector subscribes to the :class:`~.events.EventHub` and counts, per rule and per
key (the source address key, or for a per-target rule the ``target`` keyed hash), the
events the rule matches in a sliding window. When a count reaches the rule's threshold
the rule *fires*: an :class:`Alert` is kept (a bounded deque), emitted on the hub as an
``ALERT`` event (the audit log, the metrics, the dashboard and the webhook subscribe),
logged as one WARNING line, and — for a source rule with ``block_s`` > 0 — the source is
blocked (:mod:`.blocks`). An alert names the source only by its keyed hash and carries
no message content.

Defaults (:data:`DEFAULT_RULES`) are far above what a person does and low enough that
each attack is seen within seconds at the rate an attack runs (docs/protection.md);
``[rules] overrides`` changes them one setting at a time: ``"<rule>.<setting>" = value``
with settings ``threshold``, ``window_s``, ``block_s`` and ``enabled`` (0 or 1).

Counting: a sliding window estimated from two fixed windows (the current one, anchored
at the key's first event, and the one before, weighted by how much of it still overlaps
the sliding window) — O(1) memory per (rule, key), never more than the true count of
the last two windows, and exact for a burst that starts afresh. Keys are bounded per
rule (least recently seen go first). After firing, a (rule, key) starts counting again
and a source that cannot be blocked (exempt, or the victim of a per-target rule) fires
at most once per window: one alert per window, not one per event.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from veil.server.errors import ConfigError
from veil.server.protection import events as ev
from veil.server.protection.blocks import BlockList
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.settings import RuleSettings

log = logging.getLogger("veil.server.protection")

# Keys counted per rule at most, least recently seen dropped first: about 200 bytes
# each, so all rules together stay under ~50 MB even when every key is new.
MAX_KEYS = 20_000
SETTINGS = ("threshold", "window_s", "block_s", "enabled")

# Rate-limit classes (protection/policy.py) whose refusals count for a rule.
MESSAGE_CLASSES = frozenset({"submit", "relay", "group_write"})
KEY_CLAIM_CLASSES = frozenset({"keys_claim", "key_packages_claim"})
REGISTRATION_CLASSES = frozenset({"register", "challenge"})
AUTH_CLASSES = frozenset({"auth_failure"})
SLOW_PHASES = frozenset({"first_byte", "header", "body"})


@dataclass(frozen=True, slots=True)
class Match:
    """Events of ``kind`` (and, if ``field`` is set, whose ``field`` is in ``values``)."""

    kind: str
    field: str = ""
    values: frozenset[str] = frozenset()

    def matches(self, event: SecurityEvent) -> bool:
        return not self.field or str(event.fields.get(self.field)) in self.values


@dataclass(frozen=True, slots=True)
class Rule:
    """One intrusion rule: ``threshold`` matching events of one key in ``window_s``
    fires it; a source rule then blocks for ``block_s`` (0: alert only)."""

    name: str
    matches: tuple[Match, ...]
    threshold: int
    window_s: float
    block_s: float
    enabled: bool = True
    key: str = "source"  # "source" (the address key) or "target" (a keyed account)
    description: str = ""

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(m.kind for m in self.matches)

    @property
    def blocks(self) -> bool:
        # A target is a victim: a per-target rule alerts, it never blocks anyone.
        return self.key == "source" and self.block_s > 0


def _m(kind: str, field_name: str = "", *values: str) -> Match:
    return Match(kind, field_name, frozenset(values))


def _limited(classes: frozenset[str]) -> Match:
    return Match(ev.RATE_LIMITED, "limit_class", classes)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("auth_bruteforce", (_m(ev.AUTH_FAILURE), _limited(AUTH_CLASSES)),
         threshold=20, window_s=60, block_s=900,
         description="failed credentials from one address"),
    Rule("key_draining", (_m(ev.KEY_CLAIM), _m(ev.KEY_PACKAGE_CLAIM),
                          _limited(KEY_CLAIM_CLASSES)),
         threshold=150, window_s=60, block_s=900,
         description="prekey bundles and KeyPackages claimed from one address"),
    Rule("key_draining_target", (_m(ev.KEY_CLAIM), _m(ev.KEY_PACKAGE_CLAIM)),
         threshold=40, window_s=60, block_s=0, key="target",
         description="one account's prekeys or KeyPackages claimed (alert only)"),
    Rule("message_flood", (_limited(MESSAGE_CLASSES),),
         threshold=50, window_s=10, block_s=600,
         description="message submissions refused by the rate limits, one address"),
    Rule("message_volume", (_m(ev.MESSAGE_SUBMIT),),
         threshold=2000, window_s=60, block_s=0,
         description="submissions from one address, within its limits (alert only)"),
    Rule("message_flood_target", (_m(ev.MESSAGE_SUBMIT),),
         threshold=1200, window_s=60, block_s=0, key="target",
         description="submissions into one account's queue (alert only)"),
    Rule("malformed_storm", (_m(ev.MALFORMED),),
         threshold=20, window_s=60, block_s=900,
         description="bodies or frames that failed to decode, one address"),
    Rule("route_scan", (_m(ev.UNKNOWN_ROUTE),),
         threshold=30, window_s=60, block_s=900,
         description="requests for routes that do not exist, one address"),
    Rule("registration_storm", (_m(ev.REGISTRATION), _m(ev.REGISTRATION_REFUSED),
                                _limited(REGISTRATION_CLASSES)),
         threshold=30, window_s=60, block_s=3600,
         description="registrations and refused registrations from one address"),
    Rule("oversized_storm", (_m(ev.OVERSIZED),),
         threshold=10, window_s=60, block_s=900,
         description="bodies or frames over the size limits, one address"),
    Rule("connection_flood", (_m(ev.CONNECTION_REFUSED, "reason", "cap"),),
         threshold=50, window_s=10, block_s=600,
         description="connections refused for the per-address cap"),
    Rule("slowloris", (_m(ev.SLOW_CONNECTION), _m(ev.TIMEOUT, "phase", *SLOW_PHASES)),
         threshold=20, window_s=60, block_s=900,
         description="connections slow in their first byte, headers or body"),
)
RULE_NAMES = tuple(rule.name for rule in DEFAULT_RULES)


def resolve_rules(settings: RuleSettings) -> dict[str, Rule]:
    """The rules in force: the defaults with ``settings.overrides`` applied; a bad
    override (unknown rule or setting, a value out of range) is a ConfigError."""
    rules = {rule.name: rule for rule in DEFAULT_RULES}
    for key, value in settings.overrides.items():
        name, dot, setting = key.partition(".")
        if not dot or name not in rules or setting not in SETTINGS:
            raise ConfigError(f"rules.overrides: unknown setting {key!r} (rules: "
                              f"{', '.join(RULE_NAMES)}; settings: {', '.join(SETTINGS)})")
        rule = rules[name]
        if setting == "threshold":
            if value < 1 or value != int(value):
                raise ConfigError(f"rules.overrides.{key} must be a whole number >= 1")
            rule = replace(rule, threshold=int(value))
        elif setting == "window_s":
            if value <= 0:
                raise ConfigError(f"rules.overrides.{key} must be positive")
            rule = replace(rule, window_s=float(value))
        elif setting == "block_s":
            if value < 0:
                raise ConfigError(f"rules.overrides.{key} must be 0 (alert only) or more")
            rule = replace(rule, block_s=float(value))
        else:
            if value not in (0, 1):
                raise ConfigError(f"rules.overrides.{key} must be 0 or 1")
            rule = replace(rule, enabled=bool(value))
        rules[name] = rule
    return rules


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule that fired, as everyone outside the detector sees it."""

    id: int  # increasing within the process
    rule: str
    source_hash: str  # keyed hash of the address (or, per-target rules, of the target)
    scope: str  # what source_hash stands for: "source" (an address) or "target"
    count: int  # events counted in the window
    window_s: float
    blocked_s: float  # 0: not blocked (alert-only rule, exempt source)
    at: int  # wall-clock milliseconds
    block_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule, "source_hash": self.source_hash,
                "scope": self.scope, "count": self.count, "window_s": self.window_s,
                "blocked_s": self.blocked_s, "at": self.at, "block_id": self.block_id}


@dataclass(slots=True)
class Window:
    """A sliding-window counter in O(1) memory (see the module docstring)."""

    start: float  # the current fixed window's start
    current: float = 0.0
    previous: float = 0.0
    fired: float | None = None  # when it last fired (at most once per window)

    def add(self, now: float, count: int, window: float) -> float:
        """Count ``count`` events at ``now``; the estimate of the last ``window`` s."""
        elapsed = now - self.start
        if elapsed >= 2 * window:
            # Nothing in the last window: start afresh, anchored here (exact for a burst).
            self.start, self.current, self.previous, elapsed = now, 0.0, 0.0, 0.0
        elif elapsed >= window:
            self.previous, self.current = self.current, 0.0
            self.start += window
            elapsed -= window
        self.current += count
        overlap = max(0.0, 1.0 - elapsed / window)
        return self.previous * overlap + self.current


@dataclass(slots=True)
class _Table:
    rule: Rule
    windows: OrderedDict[str, Window] = field(default_factory=OrderedDict)


# A table as one kind of event meets it: the field tests of that kind's matches, or
# None when one of them takes every event of the kind (the common case, no test).
_Counter = tuple[_Table, tuple[Match, ...] | None]


def _counter(table: _Table, kind: str) -> _Counter:
    matches = tuple(m for m in table.rule.matches if m.kind == kind)
    return table, None if any(not m.field for m in matches) else matches


class Detector:
    """Counts the hub's events against the rules; fires alerts and blocks."""

    def __init__(self, settings: RuleSettings, events: EventHub, blocks: BlockList,
                 clock: Callable[[], float], clock_ms: Callable[[], int], *,
                 keyed: Callable[[str], str], max_keys: int = MAX_KEYS) -> None:
        self.events = events
        self.blocks = blocks
        self.clock = clock
        self.clock_ms = clock_ms
        self.keyed = keyed
        self.max_keys = max_keys
        self.settings = settings
        self._alerts: deque[Alert] = deque(maxlen=settings.max_alerts_kept)
        self._next_id = 1
        self._tables: dict[str, _Table] = {}
        self._by_kind: dict[str, list[_Counter]] = {}
        self.reload(settings)
        events.subscribe(self.on_event)

    @property
    def rules(self) -> dict[str, Rule]:
        return {name: table.rule for name, table in self._tables.items()}

    def reload(self, settings: RuleSettings) -> None:
        """New settings (SIGHUP): counters of unchanged rules are kept."""
        rules = resolve_rules(settings)
        self.settings = settings
        self.blocks.settings = settings  # max_block_s and offence_memory_s too
        if self._alerts.maxlen != settings.max_alerts_kept:
            self._alerts = deque(self._alerts, maxlen=settings.max_alerts_kept)
        tables: dict[str, _Table] = {}
        for name, rule in rules.items():
            old = self._tables.get(name)
            tables[name] = old if old is not None and old.rule == rule else _Table(rule)
        self._tables = tables
        self._by_kind = {}
        if settings.enabled:
            for table in tables.values():
                if table.rule.enabled:
                    for kind in table.rule.kinds:
                        self._by_kind.setdefault(kind, []).append(_counter(table, kind))

    def close(self) -> None:
        self.events.unsubscribe(self.on_event)

    def alerts(self, limit: int = 100) -> list[Alert]:
        """The most recent alerts, newest first."""
        out: list[Alert] = []
        for alert in reversed(self._alerts):
            if len(out) >= limit:
                break
            out.append(alert)
        return out

    def __len__(self) -> int:
        return len(self._alerts)

    def on_event(self, event: SecurityEvent) -> None:
        """The hub's subscriber (synchronous, O(rules matching the kind))."""
        counters = self._by_kind.get(event.kind)
        if not counters:
            return
        for table, tests in counters:
            rule = table.rule
            if tests is not None and not any(m.matches(event) for m in tests):
                continue
            if rule.key == "source":
                key = event.source
                # A source already blocked cannot fire again: its requests are refused.
                if key is None or (rule.blocks and self.blocks.blocked_for(key) is not None):
                    continue
            else:
                target = event.fields.get("target")
                key = str(target) if target else None
                if key is None:
                    continue
            self._count(table, key, max(event.count, 1))

    def _count(self, table: _Table, key: str, count: int) -> None:
        rule, now = table.rule, self.clock()
        window = table.windows.get(key)
        if window is None:
            window = table.windows[key] = Window(now)
            while len(table.windows) > self.max_keys:
                table.windows.popitem(last=False)
        else:
            table.windows.move_to_end(key)
        estimate = window.add(now, count, rule.window_s)
        if estimate < rule.threshold:
            return
        if window.fired is not None and now - window.fired < rule.window_s:
            return
        # Fire, and count afresh: the next alert needs a full threshold again. A source
        # now blocked sends nothing that counts until its block ends, and may fire again
        # as soon as it resumes; one that could not be blocked waits out a window.
        window.start, window.current, window.previous = now, 0.0, 0.0
        blocked = self._fire(rule, key, int(estimate + 0.5))
        window.fired = None if blocked else now

    def _fire(self, rule: Rule, key: str, count: int) -> bool:
        """Alert (and block); whether the source is blocked now."""
        block = self.blocks.block(key, rule.block_s, rule.name) if rule.blocks else None
        # A per-target key is already a keyed hash; a source is hashed here.
        source_hash = key if rule.key == "target" else self.keyed(key)
        alert = Alert(id=self._next_id, rule=rule.name, source_hash=source_hash,
                      scope=rule.key, count=count, window_s=rule.window_s,
                      blocked_s=block.seconds if block is not None else 0.0,
                      at=self.clock_ms(), block_id=block.id if block is not None else None)
        self._next_id += 1
        self._alerts.append(alert)
        log.warning("alert %s: %s %s, %d events in %g s, blocked %g s", rule.name,
                    rule.key, source_hash, count, rule.window_s, alert.blocked_s)
        # The event's own count stays 1 (one firing: metrics count firings by it); the
        # events counted travel as ``hits``. A target is never a source.
        self.events.emit(ev.ALERT, key if rule.key == "source" else None,
                         rule=rule.name, hits=count, window_s=rule.window_s,
                         blocked_s=alert.blocked_s, source_hash=source_hash,
                         scope=rule.key, at=alert.at, block_id=alert.block_id,
                         alert_id=alert.id)
        return block is not None


__all__ = [
    "DEFAULT_RULES",
    "RULE_NAMES",
    "Alert",
    "Detector",
    "Match",
    "Rule",
    "Window",
    "resolve_rules",
]
