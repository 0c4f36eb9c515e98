"""Sender certificates, fetched ahead of need and refreshed on their own schedule
(issue 10 §4, item 2; docs/client.md, "What the server learns").

A sealed envelope carries a short-lived sender certificate that the device fetches with
its credentials (``GET /v1/certificate``). The client used to fetch it inside a send,
whenever the cached one was within ten minutes of expiry or none was cached — and a new
process (every ``veil send``) had none — so an authenticated request came a few
milliseconds before the sealed one and named its sender. Here:

- the certificate is cached in memory and in the encrypted store (with the time it was
  fetched), so a process that starts, sends and exits reuses it;
- it is refreshed at a random point between :data:`REFRESH_FROM` and
  :data:`REFRESH_TO` of its lifetime (12–18 hours into a one-day certificate), by a
  background timer (:meth:`SenderCertificates.timer`, started on first use or by the
  connection's housekeeping, :meth:`SenderCertificates.maintain`), never by a send or a
  connect; housekeeping (on connect and before an HTTP drain) fetches one only when none
  is usable, so that it is there before the first sealed send needs it;
- a send uses the cached certificate while at least :data:`USABLE_MARGIN_MS` of it
  remains, even past its refresh point, and fetches one itself only when none is usable
  (a device that never connected, or one offline for longer than the lifetime);
- a refresh that is found overdue (a process starting with an old certificate, a
  machine waking from suspend) is put off by a random delay of up to
  :data:`LATE_JITTER_MS` instead of being made at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct

from msgspec import UNSET

from veil.client.device import Context
from veil.client.errors import ClientError
from veil.core import sealed
from veil.core.errors import CoreError
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")

REFRESH_FROM = 0.5                  # refresh between these fractions of the lifetime
REFRESH_TO = 0.75
USABLE_MARGIN_MS = 5 * 60 * 1000    # a send uses a certificate until this long before expiry
LATE_JITTER_MS = 10 * 60 * 1000     # an overdue refresh waits up to this long
RETRY_MIN_MS = 30_000               # after a failed refresh, try again in 30–120 s
RETRY_MAX_MS = 120_000
RECHECK_S = 60.0                    # the timer re-reads the clock at least this often
_KIND, _NAME = "certificate", "sender"
_FETCHED_AT = struct.Struct(">Q")


class SenderCertificates:
    """This device's sender certificate: cached, stored, refreshed on a timer.

    ``rng`` draws the refresh points (tests pass a seeded one); ``recheck_s`` bounds how
    long the timer sleeps before it re-reads the clock (so an injected clock, or a
    machine that slept, is noticed)."""

    def __init__(self, ctx: Context, rng: random.Random | None = None) -> None:
        self._ctx = ctx
        self._rng = rng or random.SystemRandom()
        self._cert: sealed.SenderCertificate | None = None
        self._fetched_at = 0
        self._refresh_at: int | None = None
        self._loaded = False
        self._fetching: asyncio.Task[sealed.SenderCertificate] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._recheck_s = RECHECK_S

    @property
    def recheck_s(self) -> float:
        return self._recheck_s

    @recheck_s.setter
    def recheck_s(self, seconds: float) -> None:
        self._recheck_s = seconds
        self.wake()

    def wake(self) -> None:
        """Make the timer re-read the clock now (a changed ``recheck_s``, a test clock
        moved, a machine known to have resumed)."""
        self._wake.set()

    # --- what is cached ------------------------------------------------------------------

    @property
    def cached(self) -> sealed.SenderCertificate | None:
        """The cached certificate if a send may still use it, else None (also once a
        newer key statement revoked the server key that issued it)."""
        self._load()
        cert = self._cert
        if cert is None or self._ctx.clock() >= self._usable_until(cert, self._fetched_at) \
                or cert.server_certificate.key_id < self._ctx.device.min_server_key_id():
            return None
        return cert

    def next_refresh_ms(self) -> int | None:
        """When the cached certificate is to be replaced (None: nothing is cached)."""
        self._load()
        return None if self._cert is None else self._refresh_at

    def due(self) -> bool:
        """Whether the timer should fetch now: none usable, or the refresh point came."""
        if self.cached is None:
            return True
        at = self._refresh_at
        return at is not None and self._ctx.clock() >= at

    # --- getting one ---------------------------------------------------------------------

    async def get(self) -> sealed.SenderCertificate:
        """The certificate for a send: the cached one while usable (whatever its refresh
        point); fetched here only when there is none."""
        self.start()
        cert = self.cached
        if cert is not None:
            return cert
        return await self.refresh()

    async def refresh(self) -> sealed.SenderCertificate:
        """Fetch a new certificate now (one request at a time, shared by the callers)."""
        task = self._fetching
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(_retrieve)
            self._fetching = task
        return await asyncio.shield(task)

    async def maintain(self) -> None:
        """Housekeeping (on connect, before an HTTP drain): make sure the timer runs and,
        when no usable certificate is cached, fetch one now, ahead of the sends that
        will need it. One past its refresh point is left to the timer, which replaces
        it at its own random moment: a connect is often followed by sends (the outbox
        is flushed), so it must not be the moment of a refresh."""
        self.start()
        if self.cached is None:
            await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        """Refresh; a failure is logged and retried 30–120 s later."""
        try:
            await self.refresh()
        except ClientError as exc:
            log.warning("could not refresh the sender certificate: %s", exc.code)
            self._refresh_at = self._ctx.clock() + self._rng.randint(RETRY_MIN_MS,
                                                                      RETRY_MAX_MS)

    # --- the timer -----------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`timer` in the background until :meth:`close` (idempotent)."""
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self.timer())

    async def timer(self) -> None:
        """Refresh at each certificate's refresh point, until cancelled."""
        clock = self._ctx.clock
        while True:
            self._load()
            at, now = self._refresh_at, clock()
            if at is not None and at > now:
                floor = min(1.0, self.recheck_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(
                        max((at - now) / 1000, floor), self.recheck_s))
                self._wake.clear()
                continue
            cert = self.cached
            if at is not None and cert is not None and now - at > 2000 * self.recheck_s:
                # Woken long after the refresh point (the machine slept): not now, at
                # the moment of waking, but a little later at random.
                self._refresh_at = self._late(cert, self._fetched_at, now)
                continue
            await self._refresh_quietly()
            if self._refresh_at is None or self._refresh_at <= now:
                # Nothing scheduled after the moment this round began: do not spin.
                self._refresh_at = clock() + RETRY_MIN_MS

    async def close(self) -> None:
        for task in (self._timer, self._fetching):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._timer = self._fetching = None

    # --- internals -----------------------------------------------------------------------

    @staticmethod
    def _usable_until(cert: sealed.SenderCertificate, fetched_at: int) -> int:
        lifetime = max(0, cert.expires_at - fetched_at)
        return cert.expires_at - min(USABLE_MARGIN_MS, lifetime // 4)

    def _schedule(self, cert: sealed.SenderCertificate, fetched_at: int) -> int:
        lifetime = max(0, cert.expires_at - fetched_at)
        return fetched_at + int(lifetime * self._rng.uniform(REFRESH_FROM, REFRESH_TO))

    def _late(self, cert: sealed.SenderCertificate, fetched_at: int, now: int) -> int:
        """A random moment soon after ``now``, before the certificate stops being usable."""
        room = self._usable_until(cert, fetched_at) - now
        return now + self._rng.randint(1, max(1, min(LATE_JITTER_MS, room // 2)))

    def _check(self, cert: sealed.SenderCertificate, now: int) -> None:
        """A certificate this device may seal with: valid under the pinned root, not
        from a revoked server key, and naming this device's account and identity."""
        ctx = self._ctx
        try:
            cert.validate(ctx.device.record.trust_root, now)
        except CoreError as exc:
            raise ClientError(f"the server issued an unusable sender certificate: {exc}")\
                from None
        if cert.server_certificate.key_id < ctx.device.min_server_key_id():
            raise ClientError("the server issued a sender certificate from a revoked "
                              "server key")
        if cert.account_id.hex() != ctx.device.record.account or \
                cert.identity != ctx.identity.public:
            raise ClientError("the server issued a sender certificate for someone else")

    def _load(self) -> None:
        """Once: the certificate a previous process stored, if it is still good."""
        if self._loaded:
            return
        self._loaded = True
        raw = self._ctx.store.get(_KIND, _NAME)
        if raw is None or len(raw) < _FETCHED_AT.size:
            return
        now = self._ctx.clock()
        try:
            (fetched_at,) = _FETCHED_AT.unpack_from(raw)
            cert = sealed.SenderCertificate.from_bytes(raw[_FETCHED_AT.size:])
            self._check(cert, now)
        except (CoreError, ClientError):
            return                           # expired, revoked or unreadable: fetch anew
        if now >= self._usable_until(cert, fetched_at):
            return
        self._cert, self._fetched_at = cert, fetched_at
        at = self._schedule(cert, fetched_at)
        self._refresh_at = at if at > now else self._late(cert, fetched_at, now)

    async def _fetch(self) -> sealed.SenderCertificate:
        ctx = self._ctx
        answer = await ctx.api.call("GET", "/v1/certificate", rs.SenderCertificate)
        now = ctx.clock()
        try:
            cert = sealed.SenderCertificate.from_bytes(answer.certificate)
        except CoreError as exc:
            raise ClientError(f"the server issued an unusable sender certificate: {exc}")\
                from None
        if answer.key_statement is not UNSET:
            ctx.device.learn_statement(answer.key_statement)
        self._check(cert, now)
        ctx.store.put(_KIND, _NAME, _FETCHED_AT.pack(now) + cert.to_bytes())
        self._loaded = True
        self._cert, self._fetched_at = cert, now
        self._refresh_at = self._schedule(cert, now)
        return cert


def _retrieve(task: asyncio.Task[sealed.SenderCertificate]) -> None:
    """A fetch nobody waits for any more must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()

__all__ = [
    "LATE_JITTER_MS",
    "REFRESH_FROM",
    "REFRESH_TO",
    "USABLE_MARGIN_MS",
    "SenderCertificates",
]
