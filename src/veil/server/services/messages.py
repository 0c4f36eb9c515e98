"""The message queue: sealed envelopes in, per-device queues, push, acknowledge, delete.

A submission carries one opaque envelope for every current device of the recipient
(Signal's multi-device rule: a mismatch is answered with the missing and extra device
ids so the sender can fix its session list and retry). It is authorised either by the
sender's device credentials or, for sealed sender, by the recipient's access key
(``HMAC-SHA256(profile_key, "veil access key v1")[:16]``, uploaded by the recipient),
or by the recipient's ``unrestricted_sealed`` setting. The sender is never stored.

An envelope is durable when :meth:`MessageService.submit` returns; only then is it
pushed to a connected device. It is deleted when that device acknowledges it, or
``envelope_ttl_s`` after it was stored (:meth:`MessageService.expire`, run by the
retention job of ``services/retention.py``; issue 12 §4). The envelopes queued for one
account total at most ``max_queued_bytes_per_account``: a submission that would go
beyond is refused whole (``queue_quota_exceeded``), sealed or not.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from veil.server.bus import Bus, EnvelopeQueued
from veil.server.config import ServerConfig
from veil.server.errors import (
    AccountNotFound,
    InvalidAccessKey,
    MismatchedDevices,
    QueueFull,
    QueueQuotaExceeded,
    ValidationFailed,
)
from veil.server.storage.base import EnvelopeExpiry, RecipientInfo, Storage, StoredEnvelope

# Envelopes one expiry transaction deletes at most (the job repeats until done), so a
# large backlog never holds the database thread for long.
EXPIRY_BATCH = 5000


@dataclass(frozen=True)
class Outgoing:
    """One envelope of a submission."""

    device_id: int
    body: bytes


@dataclass(frozen=True)
class DeviceSender:
    """A submission authenticated with the sender's own device credentials."""

    account_id: bytes
    device_id: int


@dataclass(frozen=True)
class SealedSender:
    """A sealed submission: the server learns nothing about the sender but the key."""

    access_key: bytes | None


Sender = DeviceSender | SealedSender


@dataclass(frozen=True)
class Accepted:
    id: int
    device_id: int
    ts: int


class MessageService:
    def __init__(
        self, storage: Storage, bus: Bus, config: ServerConfig, clock_ms: Callable[[], int]
    ) -> None:
        self._storage = storage
        self._bus = bus
        self._config = config
        self._clock_ms = clock_ms
        # Since start, for the metrics (protection/metrics.py): envelopes stored, and
        # acknowledged by their device (delivered); plain ints, cheap on the hot path.
        self.stored = 0
        self.delivered = 0

    def _authoriser(self, sender: Sender, items: Sequence[Outgoing]) -> Callable[
        [RecipientInfo], None
    ]:
        given = [item.device_id for item in items]
        if len(set(given)) != len(given):
            raise ValidationFailed("a submission names a device more than once")
        max_queue = self._config.max_queue_per_device
        max_bytes = self._config.max_queued_bytes_per_account
        size = sum(len(item.body) for item in items)

        def authorise(info: RecipientInfo) -> None:
            expected = set(info.devices)
            if isinstance(sender, SealedSender):
                if not info.unrestricted_sealed and (
                    sender.access_key is None or info.access_key is None
                    or not hmac.compare_digest(sender.access_key, info.access_key)
                ):
                    raise InvalidAccessKey("the access key does not match the recipient's")
            elif sender.account_id == info.account_id:
                # Messages to one's own account go to the *other* devices.
                expected.discard(sender.device_id)
            missing = sorted(expected.difference(given))
            extra = sorted(set(given).difference(expected))
            if missing or extra:
                raise MismatchedDevices(
                    "the submission does not match the recipient's devices",
                    {"missing_devices": missing, "extra_devices": extra},
                )
            for dev in given:
                if info.queue_lengths.get(dev, 0) >= max_queue:
                    raise QueueFull("the recipient's queue is full; try again later")
            # After the access key: only a sender allowed to deliver learns of the quota.
            # The details give the limit, never how much the recipient has queued.
            if info.queued_bytes + size > max_bytes:
                raise QueueQuotaExceeded(
                    f"the recipient's queued envelopes would exceed {max_bytes} bytes; "
                    "try again later", {"quota_bytes": max_bytes})

        return authorise

    def submit_nowait(
        self, recipient: bytes, items: Sequence[Outgoing], sender: Sender
    ) -> asyncio.Future[list[StoredEnvelope]]:
        """Store the envelopes durably, then push them to connected devices.

        The returned future resolves after the commit and the pushes; WebSocket sends
        use it directly (no task per send), HTTP awaits :meth:`submit`.
        """
        authorise = self._authoriser(sender, items)
        stored = self._storage.enqueue_nowait(
            recipient, [(item.device_id, item.body) for item in items], self._clock_ms(),
            authorise,
        )
        stored.add_done_callback(partial(self._publish, recipient, items))
        if isinstance(sender, SealedSender):
            # Whoever holds no credentials must not tell a missing account from a wrong
            # key: both are the same 401.
            return _hide_missing_account(stored)
        return stored

    def _publish(
        self, recipient: bytes, items: Sequence[Outgoing],
        stored: asyncio.Future[list[StoredEnvelope]],
    ) -> None:
        # Runs before any awaiting caller resumes: a reply never overtakes its push.
        if stored.cancelled() or stored.exception() is not None:
            return
        publish = self._bus.publish
        envelopes = stored.result()
        self.stored += len(envelopes)
        for envelope, item in zip(envelopes, items, strict=True):
            publish((recipient, envelope.device_id),
                    EnvelopeQueued(envelope.id, envelope.ts, item.body))

    async def submit(
        self, recipient: bytes, items: Sequence[Outgoing], sender: Sender
    ) -> list[Accepted]:
        stored = await self.submit_nowait(recipient, items, sender)
        return [Accepted(e.id, e.device_id, e.ts) for e in stored]

    async def pending(
        self, account_id: bytes, device_id: int, limit: int, after_id: int = 0
    ) -> list[StoredEnvelope]:
        """Up to ``limit`` (at most ``fetch_limit`` + 1, to tell "more") queued envelopes."""
        return await self._storage.fetch_envelopes(
            account_id, device_id, min(limit, self._config.fetch_limit + 1), after_id
        )

    async def acknowledge(self, account_id: bytes, device_id: int, ids: Sequence[int]) -> int:
        deleted = await self._storage.delete_envelopes(account_id, device_id, ids)
        self.delivered += deleted
        return deleted

    def acknowledge_nowait(
        self, account_id: bytes, device_id: int, ids: Sequence[int]
    ) -> asyncio.Future[int]:
        deleted = self._storage.delete_envelopes_nowait(account_id, device_id, ids)
        deleted.add_done_callback(self._count_delivered)
        return deleted

    def _count_delivered(self, deleted: asyncio.Future[int]) -> None:
        if not deleted.cancelled() and deleted.exception() is None:
            self.delivered += deleted.result()

    async def expire(self) -> EnvelopeExpiry:
        """Delete every envelope stored more than ``envelope_ttl_s`` ago, delivered or
        not, in transactions of at most EXPIRY_BATCH envelopes."""
        before = self._clock_ms() - self._config.envelope_ttl_s * 1000
        envelopes = size = 0
        while True:
            done = await self._storage.expire_envelopes(before_ms=before, limit=EXPIRY_BATCH)
            envelopes, size = envelopes + done.envelopes, size + done.bytes
            if done.envelopes < EXPIRY_BATCH:
                return EnvelopeExpiry(envelopes, size)


def _hide_missing_account(
    stored: asyncio.Future[list[StoredEnvelope]],
) -> asyncio.Future[list[StoredEnvelope]]:
    """``stored``, with AccountNotFound answered as InvalidAccessKey. Chained after the
    push callback, so a reply still never overtakes its push."""
    outer: asyncio.Future[list[StoredEnvelope]] = stored.get_loop().create_future()

    def done(inner: asyncio.Future[list[StoredEnvelope]]) -> None:
        if outer.done():
            return
        if inner.cancelled():
            outer.cancel()
            return
        exc = inner.exception()
        if isinstance(exc, AccountNotFound):
            outer.set_exception(InvalidAccessKey("the access key does not match the recipient's"))
        elif exc is not None:
            outer.set_exception(exc)
        else:
            outer.set_result(inner.result())

    stored.add_done_callback(done)
    return outer

__all__ = [
    "EXPIRY_BATCH",
    "Accepted",
    "DeviceSender",
    "MessageService",
    "Outgoing",
    "SealedSender",
    "Sender",
]
