"""Linking a new device to this account, end-to-end encrypted (docs/devices.md).

New device (:func:`begin`)                         Existing device (:func:`approve`)
  ephemeral X25519 key E; POST /v1/provisioning
  → channel id; secret s (16 random bytes, never sent)
  code = channel id + s + check(s, E)
  shows the code / QR  ─── the person types or scans it ───►  parse the code
                                                               GET /v1/provisioning/{id} → E'
                                                               check(s, E') (typo, swap)
                                                               next device id, registration
                                                               id, approval (identity-signed)
                                                               PUT the payload sealed to E
                                                               with s in the key schedule
  GET …/message?wait (long poll) ◄──────────────────────────────┘
  open with E and s (a payload from anyone who did not see the code, the server
  included, fails here and nothing is written); new prekeys and token;
  POST /v1/accounts/{account}/linked_devices (approval authorises it); the home is
  written; the channel is gone after that one read.

The payload (JSON inside the encryption) carries the identity key pair, account id,
device id, registration id, approval, profile key, username, pinned trust root, this
account's devices (names too), the contacts with their verified states, and the recent
1:1 history (``history_days``, 30 by default, 0 for none), trimmed oldest first to fit
the server's message bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from veil.client import contacts
from veil.client import devices as own_devices
from veil.client.api import Api, b64, unb64
from veil.client.device import Context
from veil.client.errors import ClientError, LinkCodeMismatch, LinkFailed, ServerRejected
from veil.client.records import Contact, HistoryEntry, SelfRecord
from veil.client.store import Store
from veil.core import devices as core_devices
from veil.core import keys, primitives, provisioning
from veil.core.errors import CoreError
from veil.protocol import requests as rq
from veil.protocol import responses as rs

DEFAULT_HISTORY_DAYS = 30
DAY_MS = 24 * 3600 * 1000
POLL_WAIT_S = 20                 # per long-poll request (below the transport's timeout)
_VERSION = 1
_HISTORY_PER_CONVERSATION = 10_000


@dataclass(frozen=True)
class Provisioned:
    """What the new device learned from the payload (decrypted, checked)."""

    identity: keys.IdentityKeyPair
    me: SelfRecord                 # the token is filled in by the new device
    approval: bytes
    name: str | None
    devices: list[own_devices.OwnDevice]
    contacts: list[Contact]
    history: list[HistoryEntry]


def _channel_path(channel_id: bytes) -> str:
    return f"/v1/provisioning/{channel_id.hex()}"


def _payload(ctx: Context, device_id: int, registration_id: int, approval: bytes,
             name: str | None, history_days: int, budget: int) -> bytes:
    store, me = ctx.store, ctx.device.record
    now = ctx.clock()
    known = {d.device_id: d for d in own_devices.every(store)}
    known.setdefault(me.device_id, own_devices.OwnDevice(me.device_id))
    known[device_id] = own_devices.OwnDevice(device_id, name, now)
    people = [c for c in contacts.every(store) if c.account != me.account]
    entries: list[HistoryEntry] = []
    if history_days > 0:
        since = now - history_days * DAY_MS
        for contact in people:
            entries += [e for e in (HistoryEntry.decode(raw) for raw in
                                    store.history(contact.account, _HISTORY_PER_CONVERSATION))
                        if e.timestamp >= since]
    body: dict[str, Any] = {
        "v": _VERSION, "identity": b64(ctx.identity.to_bytes()), "account": me.account,
        "device_id": device_id, "registration_id": registration_id,
        "approval": b64(approval), "profile_key": b64(me.profile_key),
        "username": me.username, "trust_root": b64(me.trust_root),
        "min_server_key_id": me.min_server_key_id, "name": name,
        "devices": [json.loads(d.encode()) for d in known.values()],
        "contacts": [json.loads(c.encode()) for c in people],
    }
    entries.sort(key=lambda e: e.timestamp)
    while True:            # the newest history that fits the server's bound
        body["history"] = [json.loads(e.encode()) for e in entries]
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(data) <= budget or not entries:
            return data
        entries = entries[max(1, len(entries) // 8):]


def _parse(data: bytes, server: str) -> Provisioned:
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown provisioning version")
        identity = keys.IdentityKeyPair.from_bytes(unb64(body["identity"]))
        account = body["account"]
        if not (isinstance(account, str) and len(account) == 32):
            raise ValueError("bad account id")
        device_id, registration_id = int(body["device_id"]), int(body["registration_id"])
        approval = unb64(body["approval"])
        core_devices.check_device(identity.public, bytes.fromhex(account), device_id,
                                  registration_id, approval)
        me = SelfRecord(server, account, device_id, b"", body["username"],
                        unb64(body["profile_key"]), registration_id,
                        unb64(body["trust_root"]), int(body["min_server_key_id"]))
        found_devices = [own_devices.OwnDevice.decode(json.dumps(d).encode())
                         for d in body["devices"]]
        people = [Contact.decode(json.dumps(c).encode()) for c in body["contacts"]]
        history = [HistoryEntry.decode(json.dumps(e).encode()) for e in body["history"]]
        name = body.get("name")
        return Provisioned(identity, me, approval, name if isinstance(name, str) else None,
                           found_devices, people, history)
    except (ValueError, KeyError, TypeError, CoreError, ClientError) as exc:
        raise LinkFailed(f"the provisioning message is malformed ({type(exc).__name__}); "
                         "link again") from None


async def approve(ctx: Context, code_text: str, name: str | None,
                  history_days: int = DEFAULT_HISTORY_DAYS) -> int:
    """The existing device's half: check the code, approve, send the payload."""
    api, store, me = ctx.api, ctx.store, ctx.device.record
    try:
        code = provisioning.LinkCode.parse(code_text)
    except CoreError as exc:
        raise LinkFailed(str(exc)) from None
    path = _channel_path(code.channel_id)
    try:
        found = await api.call("GET", path, rs.ProvisioningKey)
    except ServerRejected as exc:
        if exc.status in (400, 404):
            raise LinkFailed("no new device is waiting with that code (mistyped, expired or "
                             "used); start 'link' on the new device again") from None
        raise
    try:
        code.check(found.public_key)
    except provisioning.LinkCodeMismatch as exc:
        raise LinkCodeMismatch(str(exc)) from None
    listed = await api.call("GET", "/v1/accounts/me/devices", rs.DeviceList)
    device_id = max([d.device_id for d in listed.devices] + [me.device_id]) + 1
    registration_id = random.SystemRandom().randint(1, (1 << 31) - 1)
    now = ctx.clock()
    approval = core_devices.DeviceApproval.sign(
        ctx.identity, bytes.fromhex(me.account), device_id, registration_id, now).to_bytes()
    data = _payload(ctx, device_id, registration_id, approval, name, history_days,
                    found.max_message_bytes - 64)
    sealed = provisioning.seal(data, code, found.public_key, primitives.x25519_generate())
    await api.request("PUT", path, rq.ProvisioningPost(message=sealed))
    own_devices.remember_approved(store, me, ctx.identity.public,
                                  own_devices.OwnDevice(device_id, name, now))
    return device_id


# Writes the new home from what was provisioned, and opens it (``Client`` provides it).
MakeClient = Callable[[Provisioned, Callable[[Store], None]], Awaitable[Any]]


class PendingLink:
    """A new device waiting to be approved: show :attr:`code` (or :attr:`qr_payload`)
    to the person, then ``await finish()``; it returns the opened ``Client``."""

    def __init__(self, api: Api, server: str, channel_id: bytes, expires: int,
                 ephemeral: Any, make_client: MakeClient, owns_api: bool) -> None:
        self._api = api
        self._server = server
        self._channel_id = channel_id
        self._ephemeral = ephemeral
        self._make_client = make_client
        self._owns_api = owns_api
        public = primitives.x25519_raw(ephemeral.public_key())
        # The secret stays on this device and in the code the person carries over.
        self._code = provisioning.LinkCode.create(
            channel_id, os.urandom(provisioning.SECRET_LEN), public)
        self.expires = expires

    @property
    def code(self) -> str:
        """``ABCD-EFGH-…``: what the person types on the approving device."""
        return self._code.text()

    @property
    def qr_payload(self) -> str:
        return self._code.qr_payload()

    async def close(self) -> None:
        if self._owns_api:
            await self._api.close()

    async def finish(self, timeout: float | None = None) -> Any:
        """Wait for the approval (long polls), then register this device and write its
        home. Raises :class:`LinkFailed` when the code expires first."""
        try:
            data = await asyncio.wait_for(self._wait(), timeout)
        except TimeoutError:
            raise LinkFailed(f"no device approved the code within {timeout:g} s") from None
        finally:
            await self.close()
        try:
            plaintext = provisioning.open_sealed(data, self._code, self._ephemeral)
        except CoreError:
            raise LinkFailed("the provisioning message does not open with this device's "
                             "key and link code (not sent by the device the code was "
                             "typed into: the server?); nothing was written; link "
                             "again") from None
        provisioned = _parse(plaintext, self._server)

        def fill(store: Store) -> None:
            _write(store, provisioned)
        return await self._make_client(provisioned, fill)

    async def _wait(self) -> bytes:
        path = _channel_path(self._channel_id) + f"/message?wait={POLL_WAIT_S}"
        while True:
            try:
                answer = await self._api.call("GET", path, rs.ProvisioningMessage, auth=False)
            except ServerRejected as exc:
                if exc.status == 404:
                    raise LinkFailed("the link code expired before it was approved; start "
                                     "again") from None
                raise
            if answer.message is not None:
                return answer.message


async def begin(api: Api, server: str, make_client: MakeClient,
                owns_api: bool) -> PendingLink:
    ephemeral = primitives.x25519_generate()
    opened = await api.call("POST", "/v1/provisioning", rs.ProvisioningChannel,
                            rq.ProvisioningOpen(
                                public_key=primitives.x25519_raw(ephemeral.public_key())),
                            auth=False)
    return PendingLink(api, server, opened.channel_id, opened.expires, ephemeral,
                       make_client, owns_api)


def new_token() -> bytes:
    return os.urandom(32)


def _write(store: Store, p: Provisioned) -> None:
    """Inside the new home's first transaction: what the approving device sent."""
    me = p.me
    own_devices.keep_own_approval(store, p.approval, sent=True)
    for device in p.devices:
        if device.device_id == me.device_id:
            device.name = device.name or p.name
        own_devices.put(store, device)
    for contact in p.contacts:
        contacts.save(store, contact)
    others = sorted(d.device_id for d in p.devices if d.device_id != me.device_id)
    contacts.save(store, Contact(me.account, me.username, p.identity.public.to_bytes(),
                                 verified=True, devices=others, linked_devices=others))
    for entry in sorted(p.history, key=lambda e: e.timestamp):
        store.append_history(entry.peer, entry.encode())

__all__ = [
    "DEFAULT_HISTORY_DAYS",
    "PendingLink",
    "Provisioned",
    "approve",
    "begin",
    "new_token",
]
