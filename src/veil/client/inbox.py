"""Receiving: open the sealed envelope, decrypt, de-duplicate and store, in one store
transaction, before the envelope is acknowledged to the server.

Exactly once towards the application: a redelivered envelope fails with
``DuplicateMessage`` (its message key is gone) or matches a seen message id, and is
acknowledged without being shown again. The seen ids are bounded: the newest
:data:`SEEN_LIMIT` (over all conversations) are kept, the oldest pruned first, a few
per envelope. An id older than
that can only come back in an envelope whose ratchet key is gone too (DuplicateMessage)
or whose sender certificate has long expired (``trust.MAX_QUEUE_AGE_MS``), so the
bound does not let a replay through in practice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from veil.client import contacts, prekey_store, sessions, trust
from veil.client import devices as own_devices
from veil.client.content import CONVERSATION_KINDS, Content
from veil.client.conversations import Conversations, forget_if_deleted, incoming, line_for
from veil.client.device import Context
from veil.client.events import (
    DeviceLinked,
    Event,
    IncomingMessage,
    MessageReceived,
    SentSynced,
)
from veil.client.records import Contact
from veil.client.store import Store
from veil.core import sealed
from veil.core.errors import CoreError, DuplicateMessage, UntrustedIdentity
from veil.protocol import responses as rs

log = logging.getLogger("veil.client")

MAX_PAGES = 50                   # per pending() call: the server cannot loop us
SEEN_LIMIT = 10_000
_SEEN = "seen"
_PRUNE_PER_MESSAGE = 4           # so a home over the limit shrinks without a big write


def _remember_seen(store: Store, key: str, limit: int) -> None:
    """Inside the receive transaction: add ``key``, drop the oldest over ``limit`` (a
    few at a time, so a home far over it shrinks without one big write)."""
    store.put(_SEEN, key, b"")
    excess = store.count(_SEEN) - limit
    if excess > 0:
        store.delete_oldest(_SEEN, min(excess, _PRUNE_PER_MESSAGE))


class Inbox:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.seen_limit = SEEN_LIMIT
        self.conversations = Conversations(ctx.store, ctx.device.record.account)
        # Changes made by the envelope being received, told once it is committed.
        self._changes: list[Event] = []
        # Content of kinds other than "text" (sender account, device, content), called
        # inside the receive transaction; it must not raise (veil.client.groups).
        self.on_content: Callable[[str, int, Content], None] | None = None

    def decrypt_and_store(self, envelope: bytes, server_ts: int
                          ) -> tuple[IncomingMessage | None, bool]:
        """Synchronous (no I/O but the store): the read-modify-write of one envelope."""
        received, changed, _ = self._receive(envelope, server_ts)
        return (received if isinstance(received, IncomingMessage) else None), changed

    def _receive(self, envelope: bytes, server_ts: int
                 ) -> tuple[IncomingMessage | SentSynced | None, bool, bool]:
        """The message (or a sync from our own other device), whether the sender's
        identity changed, and whether the sender's device is newly linked."""
        ctx = self._ctx
        # The certificate must have been valid when the server accepted the envelope, not
        # when we read it (a recipient offline for a day still gets its messages) — but
        # the server's word on that time is bounded by our clock (trust.certificate_time).
        now = ctx.clock()
        opened = sealed.open_envelope(ctx.identity, envelope, ctx.device.record.trust_root,
                                      trust.certificate_time(server_ts, now))
        if opened.certificate.server_certificate.key_id < ctx.device.min_server_key_id():
            raise UntrustedIdentity("the sender certificate is from a revoked server key")
        account = opened.certificate.account_id.hex()
        device = opened.certificate.device_id
        store = ctx.store
        if account == ctx.device.record.account:
            return self._from_own_device(opened, device, now), False, False
        with store.transaction():
            known = contacts.get(store, account)
            contact = known or Contact(account)
            before = None if known is None else known.encode()
            held, plaintext, _ = sessions.decrypt(
                sessions.load(store, account, device), opened.content, ctx.identity,
                lambda: prekey_store.load(store), opened.sender_identity, now)
            opened.check_session(held[0].remote_identity)
            content = Content.decode(plaintext)
            linked = contacts.note_linked(contact, device)   # before the identity is noted
            changed = contacts.note_identity(contact, opened.sender_identity)
            sessions.save(store, account, device, held)
            if content.profile_key is not None:
                contact.profile_key = content.profile_key
            named = opened.certificate.username
            if named is not None and contact.username != named:
                contact.username = named     # vouched for by the server, as a lookup is
            if device not in contact.devices:
                contact.devices = sorted({*contact.devices, device})
            if contact.encode() != before:     # most messages change nothing here
                contacts.save(store, contact)
            seen_key = f"{account}:{content.id}"
            if store.get(_SEEN, seen_key) is not None:
                return None, changed, linked
            _remember_seen(store, seen_key, self.seen_limit)
            if content.kind in CONVERSATION_KINDS and content.kind != "text":
                self._changes.extend(self.conversations.apply(account, account, content,
                                                              now))
                return None, changed, linked
            if content.known and content.kind != "text":
                # Another kind (a group Welcome): its component, in this transaction.
                if self.on_content is not None:
                    self.on_content(account, device, content)
                return None, changed, linked
            line = line_for(content, "in", account, device,
                            changed or contact.identity_changed)
            kept = self.conversations.add_line(account, line, now, content.expire_s)
        if kept is None:
            return None, changed, linked
        return incoming(kept, contact.username, None), changed, linked

    def _from_own_device(self, opened: sealed.Unsealed, device: int,
                         now: int) -> SentSynced | None:
        """A message from another device of this account: a sync of what it sent, kept
        in the history as outgoing (never shown as an incoming message)."""
        ctx, store = self._ctx, self._ctx.store
        me = ctx.device.record
        if opened.sender_identity.to_bytes() != ctx.identity.public.to_bytes():
            raise UntrustedIdentity("a message from this account under another identity")
        with store.transaction():
            held, plaintext, _ = sessions.decrypt(
                sessions.load(store, me.account, device), opened.content, ctx.identity,
                lambda: prekey_store.load(store), opened.sender_identity, now)
            opened.check_session(held[0].remote_identity)
            content = Content.decode(plaintext)
            sessions.save(store, me.account, device, held)
            own_devices.note_own_device(store, me, ctx.identity.public, device, now)
            to = content.to
            synced_kind = content.kind in CONVERSATION_KINDS and content.kind != "text"
            if content.known and content.kind not in ("sent", "text") and not synced_kind \
                    and self.on_content is not None:
                # Another kind (a group Welcome for this device): its component decides.
                seen_key = f"own:{device}:{content.id}"
                if store.get(_SEEN, seen_key) is None:
                    _remember_seen(store, seen_key, self.seen_limit)
                    self.on_content(me.account, device, content)
                return None
            if (content.known and content.kind not in ("sent", *CONVERSATION_KINDS)) \
                    or to is None or to == me.account:
                return None                  # nothing else travels between our devices
            seen_key = f"sent:{to}:{content.id}"
            if store.get(_SEEN, seen_key) is not None:
                return None
            _remember_seen(store, seen_key, self.seen_limit)
            if contacts.get(store, to) is None:
                contacts.save(store, Contact(to))     # so the conversation is listed
            if synced_kind:                  # our edit, deletion, reaction, timer
                self._changes.extend(self.conversations.apply(to, me.account, content,
                                                              now))
                return None
            self.conversations.add_line(to, line_for(content, "out", to, device), now,
                                        content.expire_s)
        return SentSynced(content.id, to, content.text, content.timestamp, device)

    async def handle(self, envelope: bytes, server_ts: int) -> IncomingMessage | None:
        """Open, decrypt, store, tell subscribers. None for duplicates and for what can
        never be read."""
        self._changes = []
        try:
            message, changed, linked = self._receive(envelope, server_ts)
        except DuplicateMessage:
            return None
        except (CoreError, RecursionError, ValueError) as exc:
            # ValueError: content this code could not handle (it is a bug to fix, but
            # one envelope must never jam the queue for every later one).
            # Undecryptable forever (forged, corrupt, for an old identity or prekey,
            # counters at their limit): drop it, so the queue moves on.
            code = exc.code if isinstance(exc, CoreError) else type(exc).__name__
            log.warning("dropped an envelope that cannot be decrypted: %s", code)
            return None
        forget_if_deleted(self._ctx.store, self._changes)
        for change in self._changes:
            self._ctx.hub.emit(change)
        self._changes = []
        if isinstance(message, SentSynced):
            self._ctx.hub.emit(message)
            return None
        if message is not None:
            self._ctx.announce(changed, message.sender)
            if linked:
                self._ctx.hub.emit(DeviceLinked(message.sender, message.device))
            await self._ctx.hub.emit_message(MessageReceived(message, message.sender))
        return message

    async def pending(self, before: Callable[[], Awaitable[None]],
                      after: Callable[[], Awaitable[None]]
                      ) -> AsyncGenerator[IncomingMessage, None]:
        """Fetch, decrypt and acknowledge what is queued (HTTP), yielding each message as
        soon as it is stored; ``before`` and ``after`` are the housekeeping around it."""
        api = self._ctx.api
        await before()
        for _ in range(MAX_PAGES):
            answer = await api.call("GET", "/v1/messages?limit=100", rs.MessagePage)
            for item in answer.messages:
                message = await self.handle(item.envelope, item.ts)
                await api.request("DELETE", f"/v1/messages/{item.id}")
                if message is not None:
                    yield message
            if not answer.more:
                break
        await after()

__all__ = [
    "SEEN_LIMIT",
    "Inbox",
]
