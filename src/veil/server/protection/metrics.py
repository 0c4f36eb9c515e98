"""Prometheus metrics of one server process (issue 13 §4, "Monitoring layer").

Each server process has its own :class:`prometheus_client.CollectorRegistry` (tests run
several servers in one process, and the global registry would mix them). What is
counted as it happens:

- requests by route template, method and status, with a latency histogram
  (:meth:`Metrics.observe_request`, called by the HTTP guard);
- storage call latency by operation (:meth:`Metrics.observe_storage`);
- the security events of the :class:`~veil.server.protection.events.EventHub`:
  rate-limit hits by limit class, rule firings by rule, refused connections by reason,
  timeouts by phase, and every event by kind.

What is read when Prometheus scrapes (a custom collector, so nothing is kept twice):
connections by kind, blocks in force, alerts kept, messages stored and delivered,
queued envelopes (a storage count, cached for :data:`QUEUE_CACHE_S`), and the
process's resources (prometheus' own process and platform collectors).

No label ever carries an account id, a username or an address: the label values are
route templates, methods, statuses, class, rule, reason and phase names — small fixed
sets — and a value outside the set the code knows is folded into ``"other"`` once a
label has :data:`MAX_LABEL_VALUES` values, so a bug upstream cannot grow the
exposition without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from veil.server.protection import events as ev

log = logging.getLogger("veil.server.protection")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latencies from 1 ms to 10 s (a relay answers in milliseconds; the upper
# buckets show a struggling database or an attack).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
STORAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 1.0)
# Distinct values one label takes at most before new ones are reported as "other".
MAX_LABEL_VALUES = 200
# Queue depth is a storage count: at most one query per this many seconds.
QUEUE_CACHE_S = 10.0
# Recent request latencies kept for the dashboard's live p50/p99 (a ring: bounded).
RECENT_SAMPLES = 4096
RECENT_WINDOW_S = 10.0


class Sources(Protocol):
    """What the scrape-time collector reads; every method is cheap and synchronous."""

    def connections(self) -> dict[str, int]: ...

    def blocks_in_force(self) -> int | None: ...

    def alerts_kept(self) -> int | None: ...

    def messages(self) -> dict[str, int]: ...

    def queued_envelopes(self) -> int | None: ...


class _Labels:
    """The label values seen so far for one label: beyond the bound, ``"other"``."""

    def __init__(self, bound: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._bound = bound

    def __call__(self, value: object) -> str:
        text = str(value) if value is not None else "none"
        if text in self._seen:
            return text
        if len(self._seen) >= self._bound:
            return "other"
        self._seen.add(text)
        return text


class Metrics:
    """The metrics of one server process: counters fed by the server as it works and
    by the event hub, gauges read at scrape time from :meth:`bind`'s sources."""

    def __init__(self, events: ev.EventHub | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 process: bool = True) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = clock()
        r = self.registry
        self.requests = Counter("veil_http_requests", "HTTP requests answered, by route "
                                "template, method and status", ("route", "method", "status"),
                                registry=r)
        self.latency = Histogram("veil_http_request_duration_seconds",
                                 "Time to answer an HTTP request, by route template",
                                 ("route", "method"), buckets=LATENCY_BUCKETS, registry=r)
        self.storage_latency = Histogram("veil_storage_call_duration_seconds",
                                         "Storage call latency, by operation", ("op",),
                                         buckets=STORAGE_BUCKETS, registry=r)
        self.security_events = Counter("veil_security_events", "Security events seen by "
                                       "the protection layers, by kind", ("kind",),
                                       registry=r)
        self._event_children: dict[str, Any] = {}
        self._limited_children: dict[Any, Any] = {}
        self.rate_limited = Counter("veil_rate_limit_hits", "Requests and frames refused "
                                    "by a rate limit, by limit class", ("limit_class",),
                                    registry=r)
        self.rule_firings = Counter("veil_rule_firings", "Intrusion rules that fired, by "
                                    "rule", ("rule",), registry=r)
        self.refused = Counter("veil_connections_refused", "Connections refused at accept, "
                               "by reason", ("reason",), registry=r)
        self.timeouts = Counter("veil_connection_timeouts", "Connections closed for "
                                "silence or slowness, by phase", ("phase",), registry=r)
        self.blocks_lifted = Counter("veil_blocks_lifted", "Blocks ended, by who ended them",
                                     ("by",), registry=r)
        self._route = _Labels()
        self._class = _Labels()
        self._rule = _Labels()
        self._reason = _Labels()
        self._phase = _Labels()
        self._op = _Labels()
        # Children cached per label tuple: .labels() takes a lock and builds a key.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._storage_children: dict[str, Any] = {}
        # The dashboard's live view: totals and a ring of recent latencies.
        self.total_requests = 0
        self.total_errors = 0  # status >= 500
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_SAMPLES)
        self.alerts_total = 0  # rule firings since start (the dashboard's count)
        self._sources: Sources | None = None
        r.register(_ScrapeCollector(self))
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        if events is not None:
            events.subscribe(self.on_event)

    # --- fed as the server works -------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request (``route`` is the route *template*, never a path
        with identifiers in it)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            label = self._route(route)
            method_label = method if method in _METHODS else "other"
            children = (self.requests.labels(label, method_label, str(status)),
                        self.latency.labels(label, method_label))
            if len(self._request_children) < MAX_LABEL_VALUES * 8:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        self.total_requests += 1
        if status >= 500:
            self.total_errors += 1
        self._recent.append((self.clock(), seconds))

    def observe_storage(self, op: str, seconds: float) -> None:
        child = self._storage_children.get(op)
        if child is None:
            child = self.storage_latency.labels(self._op(op))
            if len(self._storage_children) < MAX_LABEL_VALUES:
                self._storage_children[op] = child
        child.observe(seconds)

    def on_event(self, event: ev.SecurityEvent) -> None:
        """The hub's subscriber: counts, by the small fields of each event."""
        count = max(event.count, 1)
        child = self._event_children.get(event.kind)
        if child is None:  # bound once per kind: .labels() is a lock and a lookup
            child = self.security_events.labels(event.kind if event.kind in ev.KINDS
                                                else "other")
            if event.kind in ev.KINDS:
                self._event_children[event.kind] = child
        child.inc(count)
        fields = event.fields
        if event.kind == ev.RATE_LIMITED:  # a flood's refusals: the child is cached
            name = fields.get("limit_class") or fields.get("class")
            limited = self._limited_children.get(name)
            if limited is None:
                limited = self.rate_limited.labels(self._class(name))
                if len(self._limited_children) < MAX_LABEL_VALUES:
                    self._limited_children[name] = limited
            limited.inc(count)
        elif event.kind == ev.ALERT:
            # One alert per emit (its ``hits`` field is the events the rule counted).
            self.rule_firings.labels(self._rule(fields.get("rule"))).inc()
            self.alerts_total += 1
        elif event.kind == ev.CONNECTION_REFUSED:
            self.refused.labels(self._reason(fields.get("reason"))).inc(count)
        elif event.kind == ev.TIMEOUT:
            self.timeouts.labels(self._phase(fields.get("phase"))).inc(count)
        elif event.kind == ev.BLOCK_LIFTED:
            by = fields.get("by")
            self.blocks_lifted.labels("operator" if by == "operator" else "expiry").inc(count)

    # --- read at scrape time -----------------------------------------------------------

    def bind(self, sources: Sources) -> None:
        """Where the scrape-time gauges come from (set once the server is built)."""
        self._sources = sources

    @property
    def sources(self) -> Sources | None:
        return self._sources

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    def recent_latency(self, window_s: float = RECENT_WINDOW_S) -> tuple[float, float] | None:
        """p50 and p99 (seconds) of the requests answered in the last ``window_s``
        seconds (at most :data:`RECENT_SAMPLES` of them), or None when there were none."""
        since = self.clock() - window_s
        samples = sorted(s for at, s in self._recent if at >= since)
        if not samples:
            return None
        return _quantile(samples, 0.50), _quantile(samples, 0.99)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _quantile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[index]


class _ScrapeCollector(Collector):
    """The gauges read when scraped, from :meth:`Metrics.bind`'s sources."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return ()  # families vary with the sources bound: no fixed description

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        uptime = GaugeMetricFamily("veil_uptime_seconds", "Seconds since the server started")
        uptime.add_metric([], m.clock() - m.started)
        yield uptime
        sources = m.sources
        if sources is None:
            return
        try:
            yield from self._from(sources)
        except Exception:  # a broken source must not break the scrape
            log.exception("metrics source failed")

    @staticmethod
    def _from(sources: Sources) -> Iterator[Metric]:
        connections = GaugeMetricFamily("veil_connections", "Open connections, by kind",
                                        labels=("kind",))
        for kind, value in sorted(sources.connections().items()):
            connections.add_metric([kind], value)
        yield connections
        blocks = sources.blocks_in_force()
        if blocks is not None:
            family = GaugeMetricFamily("veil_blocks_in_force", "Addresses blocked now")
            family.add_metric([], blocks)
            yield family
        alerts = sources.alerts_kept()
        if alerts is not None:
            family = GaugeMetricFamily("veil_alerts_kept", "Recent alerts kept in memory")
            family.add_metric([], alerts)
            yield family
        messages = CounterMetricFamily("veil_messages", "Envelopes stored and delivered "
                                       "(acknowledged) since the server started",
                                       labels=("state",))
        for state, value in sorted(sources.messages().items()):
            messages.add_metric([state], value)
        yield messages
        queued = sources.queued_envelopes()
        if queued is not None:
            family = GaugeMetricFamily("veil_queued_envelopes", "Envelopes waiting in the "
                                       f"device queues (counted at most every "
                                       f"{QUEUE_CACHE_S:g} s)")
            family.add_metric([], queued)
            yield family


class CachedCount:
    """A storage count refreshed in the background at most every ``ttl`` seconds: a
    scrape reads the last value and never waits for (or floods) the database."""

    def __init__(self, query: Callable[[], Any], clock: Callable[[], float] = time.monotonic,
                 ttl: float = QUEUE_CACHE_S) -> None:
        self._query = query
        self._clock = clock
        self._ttl = ttl
        self._value: int | None = None
        self._at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def get(self) -> int | None:
        now = self._clock()
        if now - self._at >= self._ttl and (self._task is None or self._task.done()):
            self._at = now
            with contextlib.suppress(RuntimeError):  # no running loop: keep the last
                self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self._value

    async def _refresh(self) -> None:
        try:
            self._value = int(await self._query())
        except Exception:
            log.debug("queued envelope count failed", exc_info=True)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "CachedCount",
    "Metrics",
    "Sources",
]
