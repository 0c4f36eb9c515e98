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

from dataclasses import dataclass
from typing import Protocol

from msgspec import UNSET

from veil.client import contacts, sessions
from veil.client.api import decode_answer
from veil.client.content import Content
from veil.client.device import Context
from veil.client.directory import Directory
from veil.client.errors import ClientError, IdentityChanged, ServerRejected, UnknownUser
from veil.client.records import Contact, HistoryEntry
from veil.core import keys, sealed, session
from veil.core.errors import CoreError
from veil.core.submission import Submission
from veil.protocol import requests as rq
from veil.protocol import responses as rs

CERT_REFRESH_MS = 10 * 60 * 1000
ATTEMPTS = 3


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
        self._cert: sealed.SenderCertificate | None = None
        self.relay: Relay | None = None

    async def certificate(self) -> sealed.SenderCertificate:
        ctx = self._ctx
        if self._cert is not None and self._cert.expires_at - ctx.clock() > CERT_REFRESH_MS:
            return self._cert
        answer = await ctx.api.call("GET", "/v1/certificate", rs.SenderCertificate)
        try:
            cert = sealed.SenderCertificate.from_bytes(answer.certificate)
            cert.validate(ctx.device.record.trust_root, ctx.clock())
        except CoreError as exc:
            raise ClientError(f"the server issued an unusable sender certificate: {exc}")\
                from None
        if answer.key_statement is not UNSET:
            ctx.device.learn_statement(answer.key_statement)
        if cert.server_certificate.key_id < ctx.device.min_server_key_id():
            raise ClientError("the server issued a sender certificate from a revoked "
                              "server key")
        self._cert = cert
        return cert

    async def send(self, to: str, text: str) -> SentMessage:
        """Encrypt ``text`` for every device of ``to`` and hand it to the server."""
        ctx = self._ctx
        contact = await self._directory.resolve(to)
        if contact.identity_changed:
            raise IdentityChanged(f"the safety number with {to} changed since you verified "
                                  "it; compare it again and run 'veil verify'")
        content = Content.text_message(text, ctx.clock(), ctx.device.record.profile_key)
        cert = await self.certificate()
        account = contact.account
        via = "direct"
        for attempt in range(ATTEMPTS):
            envelopes, contact = await self._encrypt_for(contact, content.encode(), cert)
            stale_key = contact.profile_key
            use_sealed = stale_key is not None
            access = sealed.derive_access_key(stale_key) if stale_key is not None else None
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
                    self._reconcile_devices(account, exc.details)
                    continue
                if exc.status == 401 and use_sealed and not last:
                    def forget(c: Contact, stale: bytes | None = stale_key) -> None:
                        if c.profile_key == stale:     # not a newer one meanwhile
                            c.profile_key = None       # stale access key: authenticate
                    contact = contacts.update(ctx.store, account, forget)[0]
                    continue
                raise
        entry = HistoryEntry(content.id, "out", account, text, content.timestamp, 0)
        ctx.store.append_history(account, entry.encode())
        return SentMessage(content.id, account, len(envelopes), content.timestamp,
                           use_sealed, via)

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
                           cert: sealed.SenderCertificate) -> tuple[dict[int, bytes], Contact]:
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
                    return self._seal_all(account, bundles, plaintext, cert)
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
                fresh, message = session.initiate(identity, bundles[device], plaintext)
                held = [fresh]
            else:
                raise _Retry             # no usable session and no fitting bundle
            envelopes[device] = sealed.seal(identity, cert, remote, message)
            sessions.save(store, account, device, held)   # drops the set-aside ones
        return envelopes, contact

__all__ = [
    "Outbox",
    "Relay",
    "SentMessage",
]
