"""The client SDK: one async :class:`Client` for apps, the CLI, user interfaces and agents.

``Client`` is a thin facade over components with one job each, all built on one
:class:`~veil.client.device.Context` (store, identity keys, server API, clock, events):

- :class:`~veil.client.directory.Directory` — contacts, ``@username`` lookups, bundles,
  safety numbers, verification;
- :class:`~veil.client.outbox.Outbox` — 1:1 sending (sessions, sealed sender, device
  reconciliation);
- :class:`~veil.client.inbox.Inbox` — receiving: decrypt, de-duplicate, store;
- :class:`~veil.client.prekey_store.PrekeyMaintenance` — rotation and top-up;
- :class:`~veil.client.history.History` — the local history;
- :class:`~veil.client.connection.Connection` — the WebSocket with reconnect/backoff;
- :class:`~veil.client.events.EventHub` — the typed event stream (:meth:`events`).

No lock is held across network I/O: the read-modify-writes of state are store
transactions (synchronous, ``BEGIN IMMEDIATE``), so a send waiting for the server never
stalls decryption. The server API goes through an injectable transport
(``transport=``), so all of this runs against an in-memory server in unit tests.
The clock is injectable too (``clock``: ms since the epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path

from msgspec import UNSET

from veil.client import (
    contacts,
    home_lock,
    home_place,
    pinning,
    prekey_store,
    proof_of_work,
    provisioning,
    trust,
)
from veil.client import pending as pending_store
from veil.client.api import Api, given
from veil.client.attachments import UPLOAD_KIND, Attachments, Progress
from veil.client.blob_http import BlobHttp
from veil.client.chat import Chat
from veil.client.connection import Connection
from veil.client.contact_link import ContactLink, identity_fingerprint
from veil.client.content import Content
from veil.client.device import Clock, Context, DeviceInfo, DeviceState
from veil.client.devices import DeviceInfo as LinkedDeviceInfo
from veil.client.devices import Devices
from veil.client.directory import Directory
from veil.client.errors import (
    AlreadyInitialised,
    ClientError,
    LinkFailed,
    ServerRejected,
    TrustRootMismatch,
)
from veil.client.events import (
    Event,
    EventHub,
    IncomingMessage,
    KeysLow,
    MessageReceived,
    OutboxFailed,
    OutboxSent,
)
from veil.client.groups import GroupInfo, GroupMember, Groups, SentGroupMessage
from veil.client.history import Conversation, History
from veil.client.inbox import Inbox
from veil.client.outbox import Outbox, Relay, SentMessage, content_of
from veil.client.pending import PendingMessage
from veil.client.prekey_store import PrekeyMaintenance
from veil.client.provisioning import PendingLink, Provisioned
from veil.client.records import Contact, HistoryEntry, SelfRecord
from veil.client.store import DEFAULT_KDF, KdfParams, Store
from veil.client.transport import Transport
from veil.core import keys, safety, sealed
from veil.core import prekeys as core_prekeys
from veil.protocol import requests as rq
from veil.protocol import responses as rs

__all__ = [
    "Client",
    "Conversation",
    "GroupInfo",
    "GroupMember",
    "IncomingMessage",
    "LinkedDeviceInfo",
    "PendingLink",
    "Relay",
    "SentGroupMessage",
    "SentMessage",
    "now_ms",
]

log = logging.getLogger("veil.client")


def now_ms() -> int:
    return int(time.time() * 1000)


def _housekeeping_content(message: PendingMessage) -> bool:
    """A receipt or typing notice waiting in the outbox: sent when it can be, never one
    of the person's messages."""
    return message.content is not None and \
        content_of(message).kind in ("receipt", "typing")


class Client(Chat):
    """Open with :meth:`register` (new identity) or :meth:`open`; ``await close()`` after.
    The conversation operations (files, replies, reactions, edits, deletions, receipts,
    typing, disappearing messages) are :class:`veil.client.chat.Chat`'s."""

    def __init__(self, store: Store, me: SelfRecord, identity: keys.IdentityKeyPair,
                 proxy: str | None = None, clock: Clock | None = None,
                 transport: Transport | None = None) -> None:
        self._store = store
        self._identity = identity
        self._api = Api(me.server, proxy, transport, pin=me.tls_pin or None)
        self._api.set_credentials(me.account, me.device_id, me.token)
        self._hub = EventHub()
        self._ctx = Context(store, identity, self._api, clock or now_ms,
                            DeviceState(store, me), self._hub)
        self._directory = Directory(self._ctx)
        self._outbox = Outbox(self._ctx, self._directory)
        # The sender certificate, refreshed ahead of need (veil.client.certificates).
        self.certificates = self._outbox.certificates
        self._inbox = Inbox(self._ctx)
        # MLS groups (veil.client.groups): Welcomes arrive as 1:1 content of their kind.
        self._groups = Groups(self._ctx, self._directory, self._outbox)
        self._inbox.on_content = self._groups.accept_welcome
        self._outbox.group_delivery = self._groups.deliver_pending   # outbox kind "group"
        self._history = History(store, me.account)
        self._own_devices = Devices(self._ctx)
        self._groups.own_devices_refresh = self._own_devices.refresh
        # Rotation and top-up of this device's prekeys (a timer while connected).
        self.prekeys = PrekeyMaintenance(store, self._api, identity, self._ctx.clock,
                                         self._keys_low)
        self._connection = Connection(self._ctx, self._inbox, self.prekeys,
                                      self._housekeeping, self._groups)
        self._live: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()   # cancelled, reaped by close()
        self._live_readers = 0
        self._flushing: asyncio.Task[None] | None = None   # the outbox, after a connect
        self._home_lock: home_lock.HomeLock | None = None   # set by open and register
        # Attachments (veil.client.attachments): uploads beside the API, downloads on
        # connections of their own.
        self._blob_http = BlobHttp(me.server, self._api.authorization, proxy,
                                   pin=me.tls_pin or None)
        self._attachments = Attachments(store, self._blob_http)
        self._outbox.attachments = self._attachments
        self._typing_sent: dict[str, int] = {}
        self._arrivals: list[IncomingMessage] = []       # awaiting delivery receipts
        self._receipts_task: asyncio.Task[None] | None = None
        self._pending_calls = 0
        self._hub.on_message = self._arrived

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def register(cls, home: Path, server: str, *, username: str | None = None,
                       passphrase: str | None = None, invite: str | None = None,
                       kdf: KdfParams = DEFAULT_KDF, proxy: str | None = None,
                       trust_root: str | None = None, clock: Clock | None = None,
                       transport: Transport | None = None, pin: str | None = None) -> Client:
        """Create an identity in ``home`` and register it with ``server``.

        ``trust_root`` is the fingerprint of the server's sealed-sender trust root as
        its operator handed it out: registration is refused (before anything is sent)
        when the server presents another root. ``pin`` is the SHA-256 fingerprint of
        the server's TLS certificate (an https server; veil.client.pinning): kept with
        the URL, every connection to the server checks it, this registration first."""
        clock = clock or now_ms
        tls_pin = pinning.pin_for(server, pin)
        pinned = trust.parse_fingerprint(trust_root) if trust_root is not None else None
        identity = keys.IdentityKeyPair.generate()
        prekeys = core_prekeys.PreKeys.generate(identity, one_time=prekey_store.ONE_TIME_BATCH,
                                                now_ms=clock())
        profile_key, token = os.urandom(32), os.urandom(32)
        registration_id = random.SystemRandom().randint(1, (1 << 31) - 1)
        api = Api(server, proxy, transport, pin=tls_pin or None)
        try:
            root_answer = await api.call("GET", "/v1/certificate/trust_root", rs.TrustRoot,
                                         auth=False)
            root = root_answer.public_key
            statement_bytes = given(root_answer.key_statement)
            if pinned is not None and trust.fingerprint(root) != pinned:
                raise TrustRootMismatch(
                    f"the server's trust root {trust.fingerprint(root)} is not the pinned "
                    f"{pinned}; refusing to register (wrong server, or someone in between)")
            min_key_id = trust.verified_min_key_id(statement_bytes, root, 0)
            upload = prekey_store.upload_body(prekeys.upload(), full=True)
            body = rq.Registration(
                identity_key=identity.public.to_bytes(), registration_id=registration_id,
                token=token, access_key=sealed.derive_access_key(profile_key),
                username=username or UNSET, invite=invite or UNSET,
                signed_prekey=upload.signed_prekey,
                last_resort_kem_prekey=upload.last_resort_kem_prekey,
                one_time_prekeys=upload.one_time_prekeys,
                one_time_kem_prekeys=upload.one_time_kem_prekeys,
            )
            # A server in registration mode "pow" asks for a solved challenge first.
            result = await proof_of_work.register(api, body)
        finally:
            if transport is None:            # an injected transport is the caller's
                await api.close()
        account, device_id = result.account_id, result.device_id
        me = SelfRecord(server, account, device_id, token,
                        username.lower() if username else None, profile_key, registration_id,
                        root, min_key_id, tls_pin)
        client = cls._create_home(home, passphrase, kdf, me, identity, prekeys, proxy, clock,
                                  transport)
        # The first device approves itself (docs/devices.md); retried on connect.
        await client._own_devices.upload_own_approval_quietly()
        await client._groups.key_packages.run_quietly()   # so others can invite it
        return client

    @classmethod
    def _create_home(cls, home: Path, passphrase: str | None, kdf: KdfParams,
                     me: SelfRecord, identity: keys.IdentityKeyPair,
                     prekeys: core_prekeys.PreKeys, proxy: str | None, clock: Clock,
                     transport: Transport | None,
                     fill: Callable[[Store], None] | None = None) -> Client:
        """Write a new home for a device the server just registered (a new account's
        first device, or a linked one: ``fill`` adds what it was provisioned with, in
        the same first transaction) and open it."""
        store = Store.create(home, passphrase, kdf)
        lock = home_lock.acquire(home)
        with store.transaction():
            store.put("self", "me", me.encode())
            store.put("self", "identity", identity.to_bytes())
            prekey_store.store_new(store, prekeys)
            home_place.record(store, home)
            if fill is not None:
                fill(store)
        client = cls(store, me, identity, proxy, clock, transport)
        client._home_lock = lock
        return client

    @classmethod
    async def begin_link(cls, home: Path, server: str, *, passphrase: str | None = None,
                         kdf: KdfParams = DEFAULT_KDF, proxy: str | None = None,
                         clock: Clock | None = None, transport: Transport | None = None,
                         pin: str | None = None) -> PendingLink:
        """Start linking this (new) device to an existing account (docs/devices.md).

        Show ``link.code`` (or ``link.qr_payload``) to the person; on a device of the
        account they run ``approve_device(code)``; ``await link.finish()`` then returns
        the opened client with the account's identity, contacts and recent history.
        ``pin``: the server's TLS certificate, as for :meth:`register`."""
        tls_pin = pinning.pin_for(server, pin)
        if Store.exists(home):
            raise AlreadyInitialised(f"{home} holds an identity already")
        tick = clock or now_ms

        async def make(given: Provisioned, fill: Callable[[Store], None]) -> Client:
            identity = given.identity
            prekeys = core_prekeys.PreKeys.generate(
                identity, one_time=prekey_store.ONE_TIME_BATCH, now_ms=tick())
            token = provisioning.new_token()
            me = dataclasses.replace(given.me, token=token, tls_pin=tls_pin)
            await cls._register_linked(me, identity, given.approval, prekeys, proxy,
                                       transport)
            client = cls._create_home(home, passphrase, kdf, me, identity, prekeys, proxy,
                                      tick, transport, fill)
            await client._groups.key_packages.run_quietly()   # so it can join groups
            return client
        api = Api(server, proxy, transport, pin=tls_pin or None)
        try:
            return await provisioning.begin(api, server, make, owns_api=transport is None)
        except BaseException:
            if transport is None:
                await api.close()
            raise

    @staticmethod
    async def _register_linked(me: SelfRecord, identity: keys.IdentityKeyPair,
                               approval: bytes, prekeys: core_prekeys.PreKeys,
                               proxy: str | None, transport: Transport | None) -> None:
        api = Api(me.server, proxy, transport, pin=me.tls_pin or None)
        try:
            root = await api.call("GET", "/v1/certificate/trust_root", rs.TrustRoot,
                                  auth=False)
            if root.public_key != me.trust_root:
                raise TrustRootMismatch(
                    f"the server's trust root {trust.fingerprint(root.public_key)} is not "
                    f"the one the approving device pinned "
                    f"({trust.fingerprint(me.trust_root)}); refusing to link")
            upload = prekey_store.upload_body(prekeys.upload(), full=True)
            await api.call("POST", f"/v1/accounts/{me.account}/linked_devices", rs.DeviceAdded,
                           rq.DeviceLink(
                               device_id=me.device_id, registration_id=me.registration_id,
                               identity_key=identity.public.to_bytes(), token=me.token,
                               approval=approval, signed_prekey=upload.signed_prekey,
                               last_resort_kem_prekey=upload.last_resort_kem_prekey,
                               one_time_prekeys=upload.one_time_prekeys,
                               one_time_kem_prekeys=upload.one_time_kem_prekeys),
                           auth=False)
        except ServerRejected as exc:
            if 400 <= exc.status < 500:
                raise LinkFailed(f"the server refused to link this device ({exc.server_code}):"
                                 " approve it again") from None
            raise
        finally:
            if transport is None:
                await api.close()

    @classmethod
    async def open(cls, home: Path, *, passphrase: str | None = None,
                   proxy: str | None = None, clock: Clock | None = None,
                   transport: Transport | None = None, adopt: bool = False) -> Client:
        """Open a home: the store is verified (rollback) and older layouts migrated.
        One process at a time owns a home: another that has it open (``veil chat``,
        ``veil recv -f``, an agent) makes this raise :class:`HomeInUse`."""
        if not Store.exists(home):
            store = Store.open(home, passphrase)      # raises the "not initialised" error
        lock = home_lock.acquire(home)
        try:
            store = Store.open(home, passphrase)
        except BaseException:
            lock.release()
            raise
        try:
            raw_me, raw_id = store.get("self", "me"), store.get("self", "identity")
            if raw_me is None or raw_id is None:
                raise ClientError(f"{home} holds no registered identity")
            identity = keys.IdentityKeyPair.from_bytes(raw_id)
            me = SelfRecord.decode(raw_me)
            if prekey_store.migrate(store):
                log.info("moved the prekeys into per-record storage")
            if adopt:           # the person says the original is gone: this is the device
                home_place.record(store, home)
            else:
                home_place.check(store, home)
        except BaseException:
            store.close()
            lock.release()
            raise
        client = cls(store, me, identity, proxy, clock, transport)
        client._home_lock = lock
        return client

    async def close(self) -> None:
        """Ends every ``events()``/``messages()`` iteration and the live connection."""
        self._hub.end()
        tasks = [*self._stopping, *(t for t in (self._live, self._flushing,
                                                 self._receipts_task) if t is not None)]
        self._live = self._flushing = self._receipts_task = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._groups.close()
        await self.certificates.close()
        await self._blob_http.close()
        await self._api.close()
        self._store.close()
        if self._home_lock is not None:
            self._home_lock.release()
            self._home_lock = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- who this device is -------------------------------------------------------------

    @property
    def me(self) -> DeviceInfo:
        """A read-only view of this device (no token, no profile key)."""
        return self._ctx.device.info

    @property
    def _me(self) -> SelfRecord:
        """The full self record (holds the device token): for tests and tools only."""
        return self._ctx.device.record

    @property
    def _clock(self) -> Clock:
        return self._ctx.clock

    @property
    def account(self) -> str:
        return self._ctx.device.record.account

    @property
    def identity(self) -> keys.IdentityPublicKey:
        return self._identity.public

    def fingerprint(self) -> str:
        return self._identity.public.fingerprint()

    def trust_root_fingerprint(self) -> str:
        """The pinned sealed-sender trust root, to compare with the operator's."""
        return trust.fingerprint(self._ctx.device.record.trust_root)

    @property
    def relay(self) -> Relay | None:
        """Where sealed submissions go instead of the server (e.g. the mixnet)."""
        return self._outbox.relay

    @relay.setter
    def relay(self, relay: Relay | None) -> None:
        self.set_relay(relay)

    def set_relay(self, relay: Relay | None) -> None:
        if relay is not None and (not isinstance(getattr(relay, "name", None), str)
                                  or not callable(getattr(relay, "submit", None))):
            raise ClientError("a relay needs a name and an async submit(bytes)")
        self._outbox.relay = relay

    @property
    def on_identity_change(self) -> Callable[[str], None] | None:
        """Called with the account id after an identity change was committed (kept for
        compatibility: the documented way is the :class:`IdentityChanged` event)."""
        return self._ctx.identity_listener

    @on_identity_change.setter
    def on_identity_change(self, listener: Callable[[str], None] | None) -> None:
        self._ctx.identity_listener = listener

    # --- contacts, safety numbers, history ----------------------------------------------

    async def resolve(self, who: str) -> Contact:
        """``@username``, an account id or a contact link → the contact (created on
        first use)."""
        return await self._directory.resolve(who)

    def contact_link(self) -> str:
        """This account's contact link (``veil.client.contact_link``): who holds it can
        write to this account sealed from the first message on, and the server cannot
        substitute keys at that first contact."""
        record = self._ctx.device.record
        return ContactLink(record.account, sealed.derive_access_key(record.profile_key),
                           identity_fingerprint(self._identity.public.to_bytes()),
                           record.username).encode()

    def add_contact(self, link: str) -> Contact:
        """Keep a contact from their link; nothing goes to the network."""
        return self._directory.add_link(link)

    def contacts(self) -> list[Contact]:
        mine = self._ctx.device.record.account      # our other devices are not a contact
        return [c for c in contacts.every(self._store) if c.account != mine]

    async def safety_number(self, who: str) -> safety.SafetyNumber:
        """The number to compare, computed from the identity key the sessions with
        ``who`` actually use (the contact's when there are none yet)."""
        return await self._directory.safety_number(who)

    async def verify(self, who: str, expected_digits: str | None = None) -> Contact:
        """Mark the contact's current identity key as verified (after comparing numbers).

        With ``expected_digits`` (the number the user compared) the check and the mark
        are one transaction: the identity marked is the one those digits belong to, and
        a key that changed since is refused instead of being verified silently."""
        return await self._directory.verify(who, expected_digits)

    def history(self, who_account: str, limit: int = 50) -> list[HistoryEntry]:
        """The last ``limit`` lines of a conversation (disappearing ones whose timer
        ran out are deleted first, never shown)."""
        self.expire_messages()
        return self._history.entries(who_account, limit)

    def conversations(self) -> list[Conversation]:
        return self._history.conversations()

    # --- groups (docs/groups.md, "The client") ------------------------------------------
    # ``group`` is a group id (64 hex, ``GroupInfo.id``) or ``#name``; ``who`` is an
    # @username, an account id or a contact link, as for ``send``.

    async def create_group(self, name: str, description: str | None = None,
                           members: Sequence[str] = ()) -> GroupInfo:
        """A new group with this account as its admin; ``members`` are invited (every
        device of each). If an invitation fails the group exists all the same."""
        gid = await self._groups.create(name, description, list(members))
        return self._groups.info(gid)

    async def invite(self, group: str, *who: str) -> GroupInfo:
        """Add people (all their devices): one commit, then a Welcome to each, sealed
        as a 1:1 message. Admins only (``NotGroupAdmin``)."""
        gid = self._groups.resolve(group)
        await self._groups.invite(gid, list(who))
        return self._groups.info(gid)

    async def remove(self, group: str, who: str) -> GroupInfo:
        """Remove a member (all its devices); from that commit on it can neither read
        nor post. Admins only."""
        gid = self._groups.resolve(group)
        await self._groups.remove(gid, who)
        return self._groups.info(gid)

    async def leave(self, group: str) -> None:
        """Leave: the removal is proposed to the group (an admin's next commit carries
        it out) and this device forgets the group's keys at once; history stays."""
        await self._groups.leave(self._groups.resolve(group))

    async def rename(self, group: str, name: str, description: str | None = None
                     ) -> GroupInfo:
        """New name (and description, when given). Admins only."""
        gid = self._groups.resolve(group)
        await self._groups.rename(gid, name, description)
        return self._groups.info(gid)

    async def set_admin(self, group: str, who: str, admin: bool = True) -> GroupInfo:
        """Promote (``admin=True``) or demote a member. Admins only."""
        gid = self._groups.resolve(group)
        await self._groups.set_admin(gid, who, admin)
        return self._groups.info(gid)

    def groups(self) -> list[GroupInfo]:
        """Every group this device is or was in (``active`` False once left/removed)."""
        return self._groups.all()

    def members(self, group: str) -> list[GroupMember]:
        return self._groups.members(self._groups.resolve(group))

    def group(self, group: str) -> GroupInfo:
        """The group ``#name`` or its id names (``UnknownGroup`` if none here)."""
        gid = self._groups.resolve(group)
        return next(g for g in self._groups.all() if g.id == gid)

    async def send_group(self, group: str, text: str) -> SentGroupMessage:
        """Post ``text`` to the group: one upload, stored once for every member. The
        text is saved in the outbox first (kind ``group``): when the server cannot be
        reached it stays there (the exception says why) and :meth:`flush_outbox` posts
        it, exactly once. An epoch that ended meanwhile is caught up with and the text
        re-encrypted."""
        gid = self._groups.resolve(group)
        content = Content.text_message(text, self._ctx.clock(), b"")
        timer = self._conversations.timer(gid)
        if timer:
            content = dataclasses.replace(content, expire_s=timer)
        return await self._groups.send(gid, text, content)

    async def sync_groups(self) -> list[IncomingMessage]:
        """Catch up with every group's mailbox over HTTP (``pending()`` does this too;
        the live connection does it on each push)."""
        return await self._groups.sync_all()

    # --- linked devices (docs/devices.md) ------------------------------------------------

    async def approve_device(self, code: str, *, name: str | None = None,
                             history_days: int = provisioning.DEFAULT_HISTORY_DAYS) -> int:
        """Approve the new device showing ``code`` (from its ``begin_link``): check the
        code against the key the server relays, sign the device's approval and send it,
        end-to-end encrypted, this account's identity, contacts and the last
        ``history_days`` days of history (0: none). Returns the new device's id.
        Raises ``LinkCodeMismatch`` when the key is not the code's (a typo, or someone
        in between), ``LinkFailed`` when no device waits with that code."""
        device_id = await provisioning.approve(self._ctx, code, name, history_days)
        # It joins this device's groups once its KeyPackages are published
        # (docs/devices.md, "Groups"): now or on a later sync.
        self._groups.own_device_linked(device_id)
        return device_id

    async def devices(self) -> list[LinkedDeviceInfo]:
        """This account's devices (id, name as known here, when linked, last seen by
        this device, whether this is it); devices without a valid approval are left
        out (and get no syncs)."""
        return await self._own_devices.refresh()

    async def remove_device(self, device_id: int) -> None:
        """Unlink a device: the server revokes its credentials at once (its socket is
        closed), its keys leave the directory; contacts drop it on their next send. Its
        leaves leave every group: removed by a commit where this account is an admin,
        else proposed for removal by the next admin's commit (docs/groups.md)."""
        await self._own_devices.remove(device_id)
        if device_id != self._ctx.device.record.device_id:
            await self._groups.remove_device(device_id)

    # --- sending ------------------------------------------------------------------------

    async def send(self, to: str, text: str) -> SentMessage:
        """Save ``text`` for ``to`` in the outbox, encrypt it for every device of ``to``
        and hand it to the server. If the server cannot be reached (or the call is
        interrupted) the message stays in the outbox, encrypted once, and is sent by
        :meth:`flush_outbox` (which every connection runs); the exception says why. The
        conversation's disappearing timer goes with it."""
        content = Content.text_message(text, self._ctx.clock(),
                                       self._ctx.device.record.profile_key)
        known = self._known_account(to)
        timer = 0 if known is None else self._conversations.timer(known)
        if timer:
            content = dataclasses.replace(content, expire_s=timer)
        return await self._outbox.send(to, text, content)

    def _known_account(self, to: str) -> str | None:
        """The account ``to`` names, if that is known here without asking the server
        (so a message typed offline still goes into the outbox at once)."""
        to = to.strip()
        if to.startswith("@"):
            contact = contacts.by_username(self._ctx.store, to[1:].lower())
            return None if contact is None else contact.account
        return to.lower() if len(to) == 32 else None

    def outbox(self) -> list[PendingMessage]:
        """Messages not yet acknowledged by the server, oldest first (syncs of sent
        messages to this account's other devices wait there too, but are not listed)."""
        return [m for m in pending_store.all_pending(self._ctx.store)
                if m.kind != pending_store.SYNC_KIND and not _housekeeping_content(m)]

    def cancel(self, message_id: str) -> bool:
        """Remove an unsent message from the outbox (False: there is none with that id).
        One already encrypted may still reach the recipient if an earlier attempt's
        outcome was unknown (the server may have stored it)."""
        return pending_store.drop(self._ctx.store, message_id)

    async def flush_outbox(self, progress: Progress | None = None) -> list[SentMessage]:
        """Send what waits in the outbox, oldest first, each exactly once to the
        recipient; stops at the first the server cannot take now. Messages that cannot
        be sent at all leave the outbox; each is reported as an ``OutboxFailed`` event
        (and those sent as ``OutboxSent``). ``progress`` hears of the file uploads it
        resumes."""
        self._outbox.upload_progress = progress
        try:
            sent = await self._outbox.flush()
        finally:
            self._outbox.upload_progress = None
        failed, self._outbox.failed = self._outbox.failed, []
        for done in sent:
            self._hub.emit(OutboxSent(done.id, done.recipient, done.sealed))
        for unsent, exc in failed:
            self._hub.emit(OutboxFailed(unsent.id, unsent.to,
                                        getattr(exc, "code", "error"), str(exc)))
        return sent

    async def _certificate(self) -> sealed.SenderCertificate:
        return await self._outbox.certificate()

    # --- receiving ----------------------------------------------------------------------

    async def pending(self) -> AsyncGenerator[IncomingMessage, None]:
        """Fetch, decrypt and acknowledge what is queued for this device (HTTP), yielding
        each message as soon as it is stored."""
        stream = self._inbox.pending(self._housekeeping, self.prekeys.run_quietly)
        self._pending_calls += 1               # receipts batched to the end
        try:
            try:
                async for message in stream:
                    yield message
            finally:
                await stream.aclose()
            for message in await self._groups.sync_all():     # then every group's mailbox
                yield message
        finally:
            self._pending_calls -= 1
        self.expire_messages()
        await self.flush_delivery_receipts()   # those of what just arrived, now

    async def receive_pending(self) -> list[IncomingMessage]:
        """Everything :meth:`pending` yields, as a list."""
        return [message async for message in self.pending()]

    @contextlib.contextmanager
    def notices(self) -> Iterator[Callable[[], list[Event]]]:
        """The events other than messages that happen inside the ``with`` (e.g. the
        ``GroupMessagesMissing`` and ``GroupStalled`` of :meth:`pending`'s group syncs),
        without a live connection: ``with client.notices() as taken: ...; taken()``
        returns those not taken yet. At most ``QUEUE_SIZE`` wait between two calls."""
        queue = self._hub.add(messages=False)
        try:
            yield lambda: EventHub.drain(queue)
        finally:
            self._hub.remove(queue)

    async def events(self) -> AsyncGenerator[Event, None]:
        """The typed event stream (``veil.client.events``); keeps the live connection
        (WebSocket, reconnecting with backoff) up while at least one reader iterates.
        An error that stops the connection (e.g. the server refusing it) is raised here.
        """
        queue = self._hub.add()
        self._live_readers += 1
        if self._live is None or self._live.done():
            self._live = asyncio.create_task(self._run_live())
        try:
            async for event in self._hub.read(queue):
                yield event
        finally:
            self._hub.remove(queue)
            self._live_readers -= 1
            if self._live_readers == 0 and self._live is not None:
                # Forgotten at once, so a reader coming next starts a new connection
                # instead of waiting on one that is being cancelled.
                stopping, self._live = self._live, None
                stopping.cancel()
                self._stopping.add(stopping)
                stopping.add_done_callback(self._stopping.discard)

    async def messages(self) -> AsyncGenerator[IncomingMessage, None]:
        """Live messages (the ``MessageReceived`` events of :meth:`events`).

        A message is committed to the store before it is queued here and acknowledged
        after; while connected, a timer (and every frame) runs prekey rotation when due."""
        stream = self.events()
        try:
            async for event in stream:
                if isinstance(event, MessageReceived):
                    yield event.message
        finally:
            await stream.aclose()            # at once, not when the collector gets to it

    async def _run_live(self) -> None:
        expiry = asyncio.create_task(self.run_expiry())   # while the connection lives
        try:
            await self._connection.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:                 # the readers raise it
            self._hub.fail(exc)
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry

    def _decrypt_and_store(self, envelope: bytes, server_ts: int
                           ) -> tuple[IncomingMessage | None, bool]:
        """The synchronous receive path (benchmarks, tests)."""
        return self._inbox.decrypt_and_store(envelope, server_ts)

    # --- housekeeping -------------------------------------------------------------------

    def _keys_low(self, one_time: int, one_time_kem: int) -> None:
        self._hub.emit(KeysLow(one_time, one_time_kem))

    async def _refresh_statement(self) -> None:
        answer = await self._api.call("GET", "/v1/certificate/trust_root", rs.TrustRoot,
                                      auth=False)
        if answer.key_statement is not UNSET:
            self._ctx.device.learn_statement(answer.key_statement)

    async def _housekeeping(self) -> None:
        """On connect: the server's key statement, then prekey rotation and top-up.
        Housekeeping must not stop message delivery: failures are logged."""
        try:
            await self._refresh_statement()
        except ClientError as exc:
            log.warning("could not refresh the server key statement: %s", exc.code)
        await self.certificates.maintain()       # only when none is usable: ahead of need
        await self.prekeys.run_quietly()
        await self._groups.key_packages.run_quietly()
        await self._own_devices.upload_own_approval_quietly()
        await self._own_devices.refresh_quietly()
        if self._ctx.store.count(UPLOAD_KIND):
            referenced = {job for m in pending_store.all_pending(self._ctx.store)
                          for job in m.uploads}
            try:
                await self._attachments.forget_orphans(referenced)
            except ClientError as exc:
                log.info("could not clear unreferenced uploads: %s", exc.code)
        if self._ctx.store.count(pending_store.KIND) and (
                self._flushing is None or self._flushing.done()):
            # In the background: a slow server must not stall receiving.
            self._flushing = asyncio.create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_outbox()
        except ClientError as exc:
            log.warning("could not send the outbox: %s", exc.code)
