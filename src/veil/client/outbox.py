"""Sending 1:1 messages: encrypt for every device of a contact, seal, submit.

No lock is held across the network. What must not interleave is the read-modify-write
of sessions and contacts, and that is each time one store transaction (``BEGIN
IMMEDIATE``, synchronous, so nothing else in this process runs meanwhile either):
sessions are advanced and saved before the envelopes leave, so neither a crash nor a
concurrent receive (in this process or another on the same home) can make a message
key be used twice. A receive that runs while a send waits for the server simply
commits its own transaction in between.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec

from veil.client import contacts, pending, sessions
from veil.client.api import decode_answer
from veil.client.attachments import Attachments, Progress
from veil.client.certificates import SenderCertificates
from veil.client.content import Content
from veil.client.conversations import Conversations, forget_if_deleted, line_for
from veil.client.device import Context
from veil.client.directory import Directory
from veil.client.errors import (
    ClientError,
    GroupBusy,
    IdentityChanged,
    SealedRefused,
    ServerRejected,
    ServerUnreachable,
    UnknownUser,
)
from veil.client.events import Event
from veil.client.records import Contact
from veil.core import keys, sealed, session
from veil.core.errors import CoreError
from veil.core.submission import Submission
from veil.protocol import requests as rq
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")
ATTEMPTS = 3
# Outcomes after which a message stays in the outbox: the server may or may not have
# it, or could not be asked. An interrupted caller (CancelledError, Ctrl-C) keeps it too:
# that is not caught at all.
# Envelopes waiting in the outbox are sealed again when their certificate has less
# than this left (the recipient judges it at the time the server accepts them).
RESEAL_MARGIN_MS = 10 * 60 * 1000
RETRYABLE: tuple[type[BaseException], ...] = (ServerUnreachable, asyncio.TimeoutError)
T = TypeVar("T")


@dataclass(frozen=True)
class SentMessage:
    id: str
    recipient: str
    devices: int
    timestamp: int
    sealed: bool
    via: str = "direct"            # or the relay's name, e.g. "mixnet"


class Relay(Protocol):
    """Carries sealed submissions to the server by another route (e.g. the mixnet).

    Fire and forget: a relay has no answer channel, so device-list mismatches are not
    reported back; the first message to someone always goes direct."""

    name: str

    async def submit(self, submission: bytes) -> None: ...


class _Retry(Exception):
    """Internal: the contact changed under an encryption; roll back and start again."""


class Outbox:
    def __init__(self, ctx: Context, directory: Directory) -> None:
        self._ctx = ctx
        self._directory = directory
        self.certificates = SenderCertificates(ctx)     # veil.client.certificates
        self.relay: Relay | None = None
        # Outbox messages :meth:`flush` found unsendable (removed from the outbox), for
        # the caller to report; bounded by the outbox's own bound.
        self.failed: list[tuple[pending.PendingMessage, Exception]] = []
        self._inflight: set[str] = set()  # ids being delivered in this process
        self.conversations = Conversations(ctx.store, ctx.device.record.account)
        # Uploads of attachments (set by the client) and who hears of their progress.
        self.attachments: Attachments | None = None
        self.upload_progress: Progress | None = None
        # Delivers an outbox record of kind "group" (veil.client.groups sets it).
        self.group_delivery: Callable[[pending.PendingMessage],
                                      Awaitable[SentMessage]] | None = None

    async def certificate(self) -> sealed.SenderCertificate:
        """The cached sender certificate; fetched here only when none is usable (it is
        refreshed ahead of need on its own schedule: :mod:`veil.client.certificates`)."""
        return await self.certificates.get()

    async def send(self, to: str, text: str, content: Content | None = None,
                   uploads: Sequence[str] = ()) -> SentMessage:
        """Queue ``text`` (or ``content``: a reply, attachments, a reaction, an edit...)
        for ``to`` in the outbox (saved before anything goes to the network), then
        deliver it. If delivery fails for a reason a retry can fix (the server is
        unreachable, busy or timed out, or the caller is interrupted) the message stays
        in the outbox and :meth:`flush` sends it later; otherwise it is removed and the
        error says why it was not sent."""
        ctx = self._ctx
        if content is None:
            content = Content.text_message(text, ctx.clock(), ctx.device.record.profile_key)
        message = pending.PendingMessage(
            id=content.id, to=to, text=content.text, timestamp=content.timestamp,
            content=dataclasses.replace(content, profile_key=None).encode(),
            uploads=list(uploads))
        pending.save(ctx.store, message)
        return await self.deliver(message)

    async def deliver(self, message: pending.PendingMessage) -> SentMessage:
        """Send one outbox message; it leaves the outbox once the server stored it."""
        if message.uploads:
            message = await self.guarded(message, self._upload)
        if message.kind == pending.GROUP_KIND:
            if self.group_delivery is None:
                raise ClientError("group messages cannot be sent from here")
            return await self.guarded(message, self.group_delivery, keep=(GroupBusy,))
        if message.kind == pending.SYNC_KIND:
            return await self.guarded(message, self._deliver_sync)
        return await self.guarded(message, self._deliver)

    async def guarded(self, message: pending.PendingMessage,
                      send: Callable[[pending.PendingMessage], Awaitable[T]],
                      keep: tuple[type[BaseException], ...] = ()) -> T:
        """Run ``send`` for an outbox message under the outbox's rule: kept (attempt
        counted) when a retry can fix it (``RETRYABLE``, ``keep``, a 5xx or 429),
        removed otherwise."""
        store = self._ctx.store
        self._inflight.add(message.id)
        try:
            return await send(message)
        except RETRYABLE + keep as exc:
            current = pending.get(store, message.id)
            if current is not None:       # keep its envelopes; count the attempt
                pending.save(store, msgspec.structs.replace(
                    current, attempts=current.attempts + 1,
                    last_error=getattr(exc, "code", type(exc).__name__)))
            raise
        except ServerRejected as exc:
            if exc.status >= 500 or exc.status == 429:
                raise                     # the server's trouble: kept, retried later
            pending.drop(store, message.id)
            raise
        except (ClientError, CoreError):
            pending.drop(store, message.id)
            raise
        finally:
            self._inflight.discard(message.id)

    async def flush(self) -> list[SentMessage]:
        """Deliver every outbox message, oldest first; stops at the first that the
        server cannot take now (it and the rest stay queued). Messages that cannot be
        sent at all leave the outbox and are listed in :attr:`failed` with their error,
        for the caller to report (``Client.flush_outbox`` turns them into events)."""
        sent: list[SentMessage] = []
        for message in pending.all_pending(self._ctx.store):
            if message.id in self._inflight:
                continue                  # a send in this process is delivering it
            try:
                done = await self.deliver(message)
                if message.kind != pending.SYNC_KIND:   # housekeeping, not the person's
                    sent.append(done)
            except RETRYABLE:
                break
            except GroupBusy:
                continue                  # kept: that group kept changing; the next one
            except ServerRejected as exc:
                if exc.status >= 500 or exc.status == 429:
                    break
                self._failed(message, exc)
            except (ClientError, CoreError) as exc:
                self._failed(message, exc)
        return sent

    def _failed(self, message: pending.PendingMessage, exc: Exception) -> None:
        if message.kind == pending.SYNC_KIND:      # delivered; only our copy is lost
            log.warning("gave up syncing a sent message to this account's other "
                        "devices: %s", getattr(exc, "code", type(exc).__name__))
            return
        self.failed.append((message, exc))

    async def _upload(self, message: pending.PendingMessage) -> pending.PendingMessage:
        """Finish the message's uploads (resumed where they stopped) and put their
        pointers in its content, saved before the message is encrypted."""
        if self.attachments is None:
            raise ClientError("attachments cannot be sent from here")
        content = content_of(message)
        pointers = list(content.attachments)
        for job_id in message.uploads:
            job = self.attachments.upload_job(job_id)
            if job is None:
                raise ClientError("an attachment of this message was cancelled")
            pointer = await self.attachments.upload(job, self.upload_progress)
            pointers.append(pointer.to_json())
        content = dataclasses.replace(content, attachments=tuple(pointers))
        done = msgspec.structs.replace(message, content=content.encode(), uploads=[])
        with self._ctx.store.transaction():
            pending.save(self._ctx.store, done)
            for job_id in message.uploads:
                self.attachments.forget_upload(job_id)
        return done

    async def _deliver(self, message: pending.PendingMessage) -> SentMessage:
        ctx = self._ctx
        if message.envelopes is not None and \
                (message.cert_expires or 0) - ctx.clock() < RESEAL_MARGIN_MS:
            message = msgspec.structs.replace(message, envelopes=None)
        if message.envelopes is None or message.account is None:
            contact = await self._directory.resolve(message.to)
            if contact.identity_changed:
                raise IdentityChanged(f"the safety number with {message.to} changed since "
                                      "you verified it; compare it again and run "
                                      "'veil verify'")
            message = await self._seal(message, contact)
        assert message.envelopes is not None and message.account is not None
        account = message.account
        via = "direct"
        for attempt in range(ATTEMPTS):
            contact = contacts.get(ctx.store, account) or Contact(account)
            access = contact.access_key()
            use_sealed = access is not None
            envelopes = message.envelopes
            relay = self.relay
            if use_sealed and relay is not None:
                await relay.submit(Submission(bytes.fromhex(account), access,
                                              tuple(sorted(envelopes.items()))).encode())
                via = relay.name
                break
            try:
                await ctx.api.call(
                    "PUT", f"/v1/messages/{account}", rs.Accepted,
                    rq.Submission(messages=[rq.EnvelopeItem(device_id=d, envelope=e)
                                            for d, e in envelopes.items()]),
                    auth=not use_sealed, access_key=access)
                break
            except ServerRejected as exc:
                last = attempt == ATTEMPTS - 1
                if exc.server_code == "mismatched_devices" and not last:
                    # Nothing of this submission was stored: encrypting again, for the
                    # device list the server named, cannot make a duplicate.
                    self._reconcile_devices(account, exc.details)
                    message = await self._seal(message, contacts.get(ctx.store, account)
                                               or Contact(account))
                    continue
                if exc.status == 401 and use_sealed:
                    def forget(c: Contact, stale: bytes | None = access) -> None:
                        if c.access_key() == stale:    # not a newer one meanwhile
                            c.profile_key = c.link_access_key = None   # authenticate
                    contacts.update(ctx.store, account, forget)
                    # Nothing was stored. Resending these envelopes with credentials now
                    # would tell the server who sent what it was just offered sealed:
                    # keep the message, seal it anew, and send it on a later attempt.
                    pending.save(ctx.store, msgspec.structs.replace(message, envelopes=None))
                    raise SealedRefused(
                        f"{account[:8]}…'s access key was refused; the message stays in "
                        "the outbox and goes, with your credentials, on the next attempt"
                    ) from None
                raise
        sync: pending.PendingMessage | None = None
        changes: list[Event] = []
        with ctx.store.transaction():   # in history and out of the outbox, together
            pending.drop(ctx.store, message.id)
            if message.kind == "text":  # a group Welcome is no line of the conversation
                content = content_of(message)
                changes = self.record_sent(account, content)
                if content.kind != "typing" and (content.kind != "receipt"
                                                 or content.receipt == "read"):
                    # Read receipts too: our other devices learn what was read here.
                    sync = self._queue_sync(message, account, content)
        forget_if_deleted(ctx.store, changes)
        for change in changes:
            ctx.hub.emit(change)
        if sync is not None:
            await self._sync_now(sync)
        return SentMessage(message.id, account, len(message.envelopes or {}), message.timestamp,
                           use_sealed, via)

    def record_sent(self, conversation: str, content: Content) -> list[Event]:
        """Inside the transaction that records delivery: what we sent, in our history
        (a text line) or applied to it (our reaction, edit, deletion, timer)."""
        me = self._ctx.device.record
        now = self._ctx.clock()
        if content.kind == "text":
            self.conversations.add_line(conversation, line_for(
                content, "out", conversation, me.device_id), now, content.expire_s)
            return []
        if content.kind in ("receipt", "typing"):
            return []                          # about their lines, not ours
        return self.conversations.apply(conversation, me.account, content, now)

    def _queue_sync(self, message: pending.PendingMessage, account: str,
                    content: Content) -> pending.PendingMessage | None:
        """Inside the transaction that records ``message`` as delivered: the "sent" sync
        for this account's other devices, saved in the outbox (docs/devices.md), or
        None when there are none."""
        me = self._ctx.device.record
        own = contacts.get(self._ctx.store, me.account)
        if account == me.account or own is None or not own.devices:
            return None
        synced = dataclasses.replace(content, profile_key=None, to=account,
                                     kind="sent" if content.kind == "text" else content.kind)
        sync = pending.PendingMessage(id=message.id, to=me.account, text=message.text,
                                      timestamp=message.timestamp, account=me.account,
                                      kind=pending.SYNC_KIND, sync_to=account,
                                      content=synced.encode())
        pending.save(self._ctx.store, sync)
        return sync

    async def _sync_now(self, sync: pending.PendingMessage) -> None:
        """Try the sync at once; whatever stops it, the message it syncs was delivered,
        so the caller hears nothing of it (a retryable failure is retried by
        :meth:`flush`)."""
        try:
            await self.deliver(sync)
        except (TimeoutError, ClientError, CoreError) as exc:
            if pending.get(self._ctx.store, sync.id) is None:
                self._failed(sync, exc)
            else:
                log.info("a sync to this account's other devices waits in the outbox: "
                         "%s", getattr(exc, "code", type(exc).__name__))

    async def _deliver_sync(self, sync: pending.PendingMessage) -> SentMessage:
        """Send a sent message's sync to this account's other devices over their own
        sessions, submitted to our own account (the server expects the *other*
        devices). Sealed once into the outbox record, so a retry sends the same bytes
        and the other devices drop a second copy."""
        ctx, store = self._ctx, self._ctx.store
        me = ctx.device.record
        assert sync.sync_to is not None
        content = Content.decode(sync.content) if sync.content is not None else \
            Content(sync.id, sync.timestamp, sync.text, None, "sent", sync.sync_to)
        for attempt in range(ATTEMPTS):
            own = contacts.get(store, me.account) or Contact(me.account)
            if not own.devices:
                pending.drop(store, sync.id)     # no other device left to sync to
                return SentMessage(sync.id, me.account, 0, sync.timestamp, False)
            envelopes = sync.envelopes
            if envelopes is not None and \
                    (sync.cert_expires or 0) - ctx.clock() < RESEAL_MARGIN_MS:
                envelopes = None
            if envelopes is None:
                cert = await self.certificate()

                def keep(made: dict[int, bytes], account: str,
                         base: pending.PendingMessage = sync,
                         expires: int = cert.expires_at) -> None:
                    pending.save(store, msgspec.structs.replace(
                        base, envelopes=made, cert_expires=expires))
                envelopes, _ = await self._encrypt_for(own, content.encode(), cert, keep)
            try:
                await ctx.api.call(
                    "PUT", f"/v1/messages/{me.account}", rs.Accepted,
                    rq.Submission(messages=[rq.EnvelopeItem(device_id=d, envelope=e)
                                            for d, e in envelopes.items()]))
            except ServerRejected as exc:
                if exc.server_code != "mismatched_devices" or attempt == ATTEMPTS - 1:
                    raise
                # Nothing was stored: encrypting again for the devices it named cannot
                # make a duplicate.
                self._reconcile_devices(me.account, exc.details)
                sync = msgspec.structs.replace(sync, envelopes=None)
                continue
            pending.drop(store, sync.id)
            return SentMessage(sync.id, me.account, len(envelopes), sync.timestamp, False)
        raise ClientError("this account's device list kept changing while syncing")

    async def _seal(self, message: pending.PendingMessage,
                    contact: Contact) -> pending.PendingMessage:
        """Encrypt ``message`` for every device of ``contact``; the envelopes are saved
        in the outbox in the transaction that advances the sessions."""
        ctx = self._ctx
        content = dataclasses.replace(content_of(message),
                                      profile_key=ctx.device.record.profile_key)
        cert = await self.certificate()
        sealed_message: list[pending.PendingMessage] = []

        def keep(envelopes: dict[int, bytes], account: str) -> None:
            updated = msgspec.structs.replace(message, account=account,
                                              envelopes=envelopes,
                                              cert_expires=cert.expires_at)
            pending.save(ctx.store, updated)
            sealed_message.append(updated)
        await self._encrypt_for(contact, content.encode(), cert, keep)
        return sealed_message[-1]

    def _reconcile_devices(self, account: str, details: dict[str, object] | None) -> None:
        store = self._ctx.store
        mismatch = decode_answer(details, rs.MismatchedDevices)
        with store.transaction():
            contact = contacts.get(store, account) or Contact(account)
            devices = set(contact.devices)
            for dev in mismatch.extra_devices:
                devices.discard(dev)
                sessions.delete(store, account, dev)
            devices.update(mismatch.missing_devices)
            contact.devices = sorted(devices)
            contacts.save(store, contact)

    async def _encrypt_for(self, contact: Contact, plaintext: bytes,
                           cert: sealed.SenderCertificate,
                           keep: Callable[[dict[int, bytes], str], None] | None = None,
                           ) -> tuple[dict[int, bytes], Contact]:
        """One sealed envelope per device, and the contact as it was when they were made.

        Only sessions with the contact's identity are used, and the envelopes are sealed
        to that same identity; if the contact changed between the bundle fetch and the
        sealing transaction, it is all done again."""
        store = self._ctx.store
        account = contact.account
        for _ in range(ATTEMPTS):
            with store.transaction():
                current = contacts.get(store, account) or Contact(account)
                if current.identity_changed:
                    raise IdentityChanged(f"the identity key of {account[:8]}… changed; "
                                          "compare safety numbers again")
                have = {d for d in current.devices
                        if contacts.usable_sessions(store, current, d)[0]}
            need = None if not current.devices else \
                [d for d in current.devices if d not in have]
            bundles: dict[int, keys.PreKeyBundle] = {}
            if need is None or need:
                bundles = await self._directory.fetch_bundles(account, need)
                current = self._directory.note_bundles(account, bundles, have | set(bundles))
            if not current.devices:
                raise UnknownUser(f"account {account[:8]}… has no devices with keys")
            try:
                with store.transaction():
                    envelopes, sealed_for = self._seal_all(account, bundles, plaintext, cert)
                    if keep is not None:      # in the transaction that advanced them
                        keep(envelopes, account)
                    return envelopes, sealed_for
            except _Retry:
                continue
        raise ClientError(f"the contact {account[:8]}… kept changing while sending; "
                          "try again")

    def _seal_all(self, account: str, bundles: dict[int, keys.PreKeyBundle],
                  plaintext: bytes, cert: sealed.SenderCertificate
                  ) -> tuple[dict[int, bytes], Contact]:
        store, identity = self._ctx.store, self._ctx.identity
        contact = contacts.get(store, account) or Contact(account)
        remote = contact.identity_key()
        if contact.identity_changed or remote is None:
            raise _Retry
        envelopes: dict[int, bytes] = {}
        for device in contact.devices:
            held, _ = contacts.usable_sessions(store, contact, device)
            if held:
                message = held[0].encrypt(plaintext)
            elif device in bundles and bundles[device].identity.to_bytes() == contact.identity:
                fresh, message = session.initiate(
                    identity, bundles[device], plaintext,
                    own_device=account == self._ctx.device.record.account)
                held = [fresh]
            else:
                raise _Retry             # no usable session and no fitting bundle
            envelopes[device] = sealed.seal(identity, cert, remote, message)
            sessions.save(store, account, device, held)   # drops the set-aside ones
        return envelopes, contact

def content_of(message: pending.PendingMessage) -> Content:
    """The content an outbox message sends (saved when it was typed)."""
    if message.content is not None:
        return Content.decode(message.content)
    return Content(message.id, message.timestamp, message.text, None, message.kind)


__all__ = [
    "Outbox",
    "Relay",
    "SentMessage",
    "content_of",
]
