"""The rate-limit policy of the application layer (issue 13 §2): which buckets a request
of each route class takes from, with what rate and burst.

Every route declares a ``rate_limit`` class (http/endpoint.py); a class has one bucket
table per *dimension* it is counted on:

- ``address``: the client's address key (an IPv6 client counts as its /64);
- ``account`` / ``device``: the authenticated account or device;
- ``target``: the account a request is about (whose prekeys are claimed);
- ``pair``: (source, target) — one client against one account;
- ``share``: (source, recipient) over a long window: what one source may put into one
  recipient's queue — a quarter of ``max_queue_per_device`` at once, refilled over
  half an hour — so that a flood from one address leaves room for the recipient's
  friends while the detection layer blocks it (a chat, typing notices included, stays
  far below 1.4 envelopes a second for hours);
- ``socket``: one WebSocket (its send frames).

Defaults are what a normal person never reaches (docs/protection.md gives the
reasoning); ``[limits] rates`` replaces any of them one by one with
``"<class>.<dimension>" = "<count>/<seconds>s burst <n>"`` or ``"off"``. Requests from
exempt addresses (``[network] exempt``: loopback by default) skip every limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.server.errors import ConfigError, RateLimited
from veil.server.protection import events as ev
from veil.server.protection.addresses import NetworkList, address_key
from veil.server.protection.events import EventHub
from veil.server.protection.limiter import Row, TokenBuckets
from veil.server.protection.pow import ProofOfWork
from veil.server.protection.settings import LimitSettings
from veil.server.storage.base import LimiterRow

log = logging.getLogger("veil.server.protection")

DIMENSIONS = ("address", "account", "device", "target", "pair", "share", "socket")

# "<class>.<dimension>": "<count>/<seconds>s burst <n>". Sizes: a person sends a few
# messages a second at most and rarely a burst of a hundred (a forwarded album); claims
# a stranger's keys a handful of times an hour; registers once.
DEFAULTS: dict[str, str] = {
    # Accounts: registration and device linking, per address (a household or an office
    # behind one NAT registers a few, not hundreds). These buckets survive a restart.
    "register.address": "20/3600s burst 20",
    "challenge.address": "60/60s burst 60",
    # Failed credentials of one address (the detection layer blocks brute force; this
    # stops it in the meantime). Checked before the credentials are.
    "auth_failure.address": "30/60s burst 30",
    # Prekey bundles and KeyPackages: each claim hands out a one-time key of the target.
    "keys_claim.target": "120/3600s burst 60",
    "keys_claim.pair": "20/3600s burst 10",
    "keys_claim.address": "600/3600s burst 120",
    "key_packages_claim.target": "120/3600s burst 60",
    "key_packages_claim.pair": "20/3600s burst 10",
    "key_packages_claim.address": "600/3600s burst 120",
    "keys_upload.device": "30/60s burst 30",
    "keys_upload.address": "120/60s burst 120",
    # Messages: per address, per account, per socket, and per (source, recipient).
    "submit.address": "50/1s burst 500",
    "submit.account": "20/1s burst 300",
    "submit.socket": "20/1s burst 300",
    "submit.pair": "10/1s burst 200",
    "submit.share": "share",  # resolved from max_queue_per_device (RateLimits)
    "relay.address": "500/1s burst 2000",  # a mixnet provider speaks for many
    "fetch.address": "50/1s burst 500",
    "fetch.device": "20/1s burst 200",
    "ack.address": "200/1s burst 2000",
    # Groups: commits change everyone's state; posts are messages.
    "group_create.address": "60/3600s burst 30",
    "group_write.address": "20/1s burst 300",
    "group_read.address": "50/1s burst 500",
    # Attachments: tus chunks and downloads.
    "blob_upload.address": "20/1s burst 200",
    "blob_upload.account": "10/1s burst 100",
    "blob_download.address": "50/1s burst 500",
    # Directory lookups (usernames, provisioning channels): enumeration is slow.
    "lookup.address": "60/60s burst 120",
    "lookup.account": "30/60s burst 60",
    # WebSocket upgrades: a reconnecting client makes one every few seconds at most.
    "connect.address": "60/60s burst 60",
    "connect.account": "30/60s burst 30",
    "connect_sealed.address": "60/60s burst 60",
    "account_read.address": "50/1s burst 300",
    "account_write.address": "10/1s burst 60",
    "account_write.account": "5/1s burst 30",
    "certificate.address": "30/60s burst 60",
    "public.address": "20/1s burst 200",
    "unknown_route.address": "20/1s burst 100",  # the fallback: 404s and 405s
}
# A class no entry names takes this per-address bucket (a route added later is never
# unlimited by omission).
FALLBACK = "*.address"
FALLBACK_RATE = "50/1s burst 500"
CLASSES = frozenset(key.split(".", 1)[0] for key in DEFAULTS)
PERSISTENT = ("register",)  # classes whose buckets outlive a restart
SHARE_WINDOW_S = 1800.0  # the share bucket refills over half an hour
SAVE_INTERVAL_S = 30.0  # persistent buckets are saved this often (and on close)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*s\s+burst\s+(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Rate:
    count: float
    seconds: float
    burst: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        return f"{self.count:g}/{self.seconds:g}s burst {self.burst:g}"


def parse_rate(text: str, where: str = "limits.rates") -> Rate | None:
    """``"N/Ss burst B"`` as a Rate, ``"off"`` as None; anything else a ConfigError."""
    if text.strip().lower() == "off":
        return None
    match = _RATE.match(text)
    if match is None:
        raise ConfigError(f"{where}: {text!r} is not '<count>/<seconds>s burst <n>' or 'off'")
    count, seconds, burst = (float(g) for g in match.groups())
    if count <= 0 or seconds <= 0 or burst < 1 or not all(
            math.isfinite(v) for v in (count, seconds, burst)):
        raise ConfigError(f"{where}: {text!r} needs a positive count and seconds and a "
                          "burst of at least 1")
    return Rate(count, seconds, burst)


def resolve(settings: LimitSettings, queue_size: int = 10_000) -> dict[str, Rate | None]:
    """The table in force: the defaults, with ``settings.rates`` replacing entries."""
    share = max(1.0, float(queue_size // 4))
    table: dict[str, Rate | None] = {}
    for key, text in DEFAULTS.items():
        table[key] = Rate(share, SHARE_WINDOW_S, share) if text == "share" else parse_rate(text)
    table[FALLBACK] = parse_rate(FALLBACK_RATE)
    for key, text in settings.rates.items():
        cls, dot, dimension = key.partition(".")
        if not dot or dimension not in DIMENSIONS or (cls not in CLASSES and cls != "*"):
            raise ConfigError(f"limits.rates: unknown limit {key!r} (classes: "
                              f"{', '.join(sorted(CLASSES))}; dimensions: "
                              f"{', '.join(DIMENSIONS)})")
        table[key] = parse_rate(text, f"limits.rates.{key}")
    return table


class RateLimits:
    """The bucket tables of every limit class and dimension (``protection.limits``)."""

    def __init__(self, settings: LimitSettings, events: EventHub,
                 clock: Callable[[], float], *, exempt: Callable[[str], bool] | None = None,
                 queue_size: int = 10_000) -> None:
        self.settings = settings
        self.events = events
        self.enabled = settings.enabled
        self._queue_size = queue_size
        self._clock = clock
        self.table = resolve(settings, queue_size)
        self._buckets: dict[str, TokenBuckets] = {
            key: TokenBuckets(rate.per_s, rate.burst, settings.max_keys, clock)
            for key, rate in self.table.items() if rate is not None
        }
        if exempt is None:
            exempt = NetworkList(("127.0.0.1/32", "::1/128")).contains
        self._exempt = exempt
        self._exempt_cache: dict[str, bool] = {}
        self._plans: dict[str, dict[str, TokenBuckets]] = {}

    def reload(self, settings: LimitSettings) -> None:
        """New ``[limits]`` (SIGHUP, ``veil admin reload``): tables whose rate and burst
        stay keep their buckets; changed ones start full, removed ones go. A bad entry
        raises ConfigError and changes nothing."""
        table = resolve(settings, self._queue_size)
        buckets: dict[str, TokenBuckets] = {}
        for key, rate in table.items():
            if rate is None:
                continue
            old = self._buckets.get(key)
            if old is not None and self.table.get(key) == rate \
                    and old.max_keys == settings.max_keys:
                buckets[key] = old
            else:
                buckets[key] = TokenBuckets(rate.per_s, rate.burst, settings.max_keys,
                                            self._clock)
        self.settings, self.enabled, self.table = settings, settings.enabled, table
        self._buckets = buckets
        self._plans = {}

    def is_exempt(self, address: str) -> bool:
        hit = self._exempt_cache.get(address)
        if hit is None:
            hit = self._exempt(address)
            if len(self._exempt_cache) >= 4096:
                self._exempt_cache.clear()
            self._exempt_cache[address] = hit
        return hit

    def set_exempt(self, exempt: Callable[[str], bool]) -> None:
        """A new exemption test (the network settings were reloaded)."""
        self._exempt = exempt
        self._exempt_cache = {}

    def _plan(self, limit_class: str) -> dict[str, TokenBuckets]:
        """The tables of ``limit_class`` by dimension, resolved once per class (a send
        frame takes from five: no string building per request)."""
        plan = self._plans.get(limit_class)
        if plan is None:
            plan = {}
            for dimension in DIMENSIONS:
                table = self._buckets.get(f"{limit_class}.{dimension}")
                if table is None and dimension == "address" and limit_class not in CLASSES:
                    table = self._buckets.get(FALLBACK)
                if table is not None:
                    plan[dimension] = table
            if len(self._plans) < 4 * len(CLASSES):  # classes come from code: few
                self._plans[limit_class] = plan
        return plan

    def _table(self, limit_class: str, dimension: str) -> TokenBuckets | None:
        return self._plan(limit_class).get(dimension)

    def check(self, limit_class: str, /, source: str | None = None, **keys: str) -> None:
        """Take a token from each bucket of ``limit_class`` named by ``keys``
        (dimension=key), or raise :class:`RateLimited` with the longest wait and take
        nothing. The ``address`` key, else ``source`` (an address whose own bucket was
        taken already), names the source of the event; an exempt one skips all."""
        if not self.enabled:
            return
        address = keys.get("address", source)
        if address is not None and self.is_exempt(address):
            return
        plan = self._plan(limit_class)
        now = self._clock()
        for dimension, key in keys.items():
            table = plan.get(dimension)
            if table is not None and table.take(key, 1.0, now) > 0.0:
                break
        else:
            return  # the common case: every token taken, nothing else to do
        self._refuse(limit_class, address, plan, keys, dimension)

    def _refuse(self, limit_class: str, address: str | None,
                plan: dict[str, TokenBuckets], keys: dict[str, str], first: str) -> None:
        """``first`` had no token: give back the tokens taken before it, find the
        longest wait of all, and raise RateLimited."""
        wait, refused, before = 0.0, first, True
        for dimension, key in keys.items():
            table = plan.get(dimension)
            if table is None:
                continue
            if dimension == first:
                before = False
                left = table.peek(key)
            elif before:
                table.refund(key)
                continue
            else:
                left = table.peek(key)
            if left > wait:
                wait, refused = left, dimension
        self.events.emit(ev.RATE_LIMITED, address, limit_class=limit_class,
                         dimension=refused)
        raise RateLimited.after(max(wait, 1e-3), limit_class)

    def exhausted(self, limit_class: str, address: str) -> float:
        """Seconds until ``address`` has a token of ``limit_class`` again (0: it has)
        — for limits on failures, checked before the work that could fail."""
        if not self.enabled or self.is_exempt(address):
            return 0.0
        table = self._table(limit_class, "address")
        return 0.0 if table is None else table.peek(address)

    def spend(self, limit_class: str, address: str) -> None:
        """Take a token of ``address`` after the fact (a failure), never raising."""
        if not self.enabled or self.is_exempt(address):
            return
        table = self._table(limit_class, "address")
        if table is not None:
            table.take(address)

    # ---- persistence (PERSISTENT classes) --------------------------------------------
    def persistent_rows(self, wall_ms: int) -> dict[str, list[Row]]:
        return {name: table.rows(wall_ms) for name, table in self._buckets.items()
                if name.split(".", 1)[0] in PERSISTENT}

    def restore_rows(self, saved: Mapping[str, Iterable[Row]], wall_ms: int) -> int:
        loaded = 0
        for name, rows in saved.items():
            table = self._buckets.get(name)
            if table is not None and name.split(".", 1)[0] in PERSISTENT:
                loaded += table.restore(rows, wall_ms)
        return loaded


class LimiterStore:
    """Keeps the PERSISTENT buckets of ``limits`` across restarts: loaded on open, saved
    every ``SAVE_INTERVAL_S`` and on close. Through storage's ``limiter_save`` /
    ``limiter_load`` when the back end has them, else a JSON file under the data
    directory, replaced atomically (write, fsync, rename)."""

    def __init__(self, limits: RateLimits, storage: Any, path: Path,
                 clock_ms: Callable[[], int]) -> None:
        self.limits = limits
        self.storage = storage
        self.path = path
        self.clock_ms = clock_ms
        self._task: asyncio.Task[None] | None = None

    def _has_storage(self) -> bool:
        return hasattr(self.storage, "limiter_save") and hasattr(self.storage, "limiter_load")

    async def open(self) -> None:
        names = [n for n in self.limits.persistent_rows(self.clock_ms())]
        try:
            saved = await self._load(names)
        except Exception:
            log.exception("limiter state could not be loaded; starting with full buckets")
            saved = {}
        self.limits.restore_rows(saved, self.clock_ms())
        self._task = asyncio.get_running_loop().create_task(self._periodic())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            try:
                await self.save()
            except Exception:
                log.exception("limiter state could not be saved")

    async def save(self) -> None:
        rows = self.limits.persistent_rows(self.clock_ms())
        if self._has_storage():
            for name, table_rows in rows.items():
                await self.storage.limiter_save(
                    name, [LimiterRow(key, tokens, at) for key, tokens, at in table_rows])
            return
        if not any(rows.values()) and not self.path.exists():
            return  # nothing limited yet: no file (a test's server leaves none behind)
        data = json.dumps({name: [list(r) for r in table_rows]
                           for name, table_rows in rows.items()}).encode()
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    async def _load(self, names: Iterable[str]) -> dict[str, list[Row]]:
        if self._has_storage():
            out: dict[str, list[Row]] = {}
            for name in names:
                out[name] = [(r.key, r.tokens, r.updated_ms)
                             for r in await self.storage.limiter_load(name)]
            return out
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("limiter state unreadable; starting with full buckets")
            return {}
        if not isinstance(raw, dict):
            return {}
        loaded: dict[str, list[Row]] = {}
        for name, rows in raw.items():
            try:
                loaded[str(name)] = [(str(k), float(t), int(at)) for k, t, at in rows]
            except (TypeError, ValueError):
                continue
        return loaded


class Unprotected:
    """The layers as a context without protection sees them (unit tests' stand-in
    contexts): limits off, events to no one, no metrics."""

    def __init__(self) -> None:
        self.events = EventHub(time.monotonic)
        self.limits = RateLimits(LimitSettings(enabled=False), self.events, time.monotonic,
                                 exempt=lambda _key: True)
        self.metrics = None
        self.pow = ProofOfWork(LimitSettings(), time.monotonic,
                               lambda: int(time.time() * 1000))


UNPROTECTED = Unprotected()


def protection_of(context: Any) -> Any:
    """``context.protection``, or :data:`UNPROTECTED` for a context without one."""
    return getattr(context, "protection", None) or UNPROTECTED


def request_key(protection: Any, request: Any) -> str:
    """The client key of an aiohttp request: the network layer's (which honours
    X-Forwarded-For from configured proxies) when it is there, else the peer's."""
    network = getattr(protection, "network", None)
    if network is not None and hasattr(network, "client_key"):
        key: str = network.client_key(request)
    else:
        key = address_key(getattr(request, "remote", None))
    # Interned: every open connection of one address shares one string.
    return sys.intern(key)


__all__ = [
    "CLASSES",
    "DEFAULTS",
    "DIMENSIONS",
    "PERSISTENT",
    "UNPROTECTED",
    "LimiterStore",
    "Rate",
    "RateLimits",
    "parse_rate",
    "protection_of",
    "request_key",
    "resolve",
]
