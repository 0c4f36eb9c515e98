"""The client SDK: one async :class:`Client` for apps, the CLI, user interfaces and agents.

It owns the device's keys, sessions, contacts and history (in the encrypted
:class:`~veil.client.store.Store`), talks to one Veil server, and takes care of session
setup (PQXDH), sealed sender, prekey replenishment and rotation, reconnects and
de-duplication.

Delivery is exactly-once towards the application: an envelope is acknowledged to the
server only after the advanced session, the message and its id are committed to the
store in one transaction; a redelivered envelope then fails with ``DuplicateMessage``
(its key is gone) or matches a seen message id, and is acknowledged without being
shown again. Fixes of the outside review (issue 8) are in the components: prekey
rotation on a timer and per-record prekeys (``prekey_store``, items 3 and 9), rollback
protection (``store``, item 4), trust-root pinning, revocation and bounded certificate
times (``trust``, item 6), contacts and sessions that cannot drift apart
(``contacts``, item 7). The clock is injectable (``clock``: ms since the epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from veil.client import contacts, prekey_store, sessions, trust
from veil.client.api import Api, b64, unb64
from veil.client.content import Content
from veil.client.errors import (
    ClientError,
    IdentityChanged,
    ServerRejected,
    ServerUnreachable,
    TrustRootMismatch,
    UnknownUser,
)
from veil.client.prekey_store import PrekeyMaintenance
from veil.client.records import Contact, HistoryEntry, SelfRecord
from veil.client.store import DEFAULT_KDF, KdfParams, Store
from veil.core import keys, safety, sealed, session
from veil.core import prekeys as core_prekeys
from veil.core.errors import CoreError, DuplicateMessage, UntrustedIdentity
from veil.core.submission import Submission

log = logging.getLogger("veil.client")

CERT_REFRESH_MS = 10 * 60 * 1000
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_CONNECTION_S = 5.0        # a socket that lived shorter does not reset the backoff
MAX_PAGES = 50                   # per receive_pending call: the server cannot loop us
_ACCOUNT_HEX = re.compile(r"[0-9a-f]{32}")

Clock = Callable[[], int]


def now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def _server_data(what: str) -> Iterator[None]:
    """A malformed answer from the server is a typed error, never a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ServerRejected(502, "bad_response",
                             f"the server's {what} is malformed ({type(exc).__name__})") from None


def _account_hex(value: object) -> str:
    if not isinstance(value, str) or not _ACCOUNT_HEX.fullmatch(value):
        raise ValueError("not an account id")
    return value


class _Retry(Exception):
    """Internal: the contact changed under an encryption; roll back and start again."""


@dataclass(frozen=True)
class IncomingMessage:
    id: str
    sender: str                    # account id (hex)
    sender_username: str | None
    device: int
    text: str
    timestamp: int                 # sender's clock, ms
    identity_changed: bool = False  # warn loudly: the sender's key is not the verified one


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


@dataclass(frozen=True)
class Conversation:
    peer: str
    username: str | None
    verified: bool
    last: HistoryEntry | None


class Client:
    """Open with :meth:`register` (new identity) or :meth:`open`; ``await close()`` after."""

    def __init__(self, store: Store, me: SelfRecord, identity: keys.IdentityKeyPair,
                 proxy: str | None = None, clock: Clock | None = None) -> None:
        self.relay: Relay | None = None
        self._store = store
        self.me = me
        self._identity = identity
        self._clock: Clock = clock or now_ms
        self._api = Api(me.server, proxy)
        self._api.set_credentials(me.account, me.device_id, me.token)
        self._lock = asyncio.Lock()
        self._closed = False
        self._cert: tuple[sealed.SenderCertificate, int] | None = None
        # Rotation and top-up of this device's prekeys (a timer while messages() runs).
        self.prekeys = PrekeyMaintenance(store, self._api, identity, self._clock, self._lock)
        self.on_identity_change: Callable[[str], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def register(cls, home: Path, server: str, *, username: str | None = None,
                       passphrase: str | None = None, invite: str | None = None,
                       kdf: KdfParams = DEFAULT_KDF, proxy: str | None = None,
                       trust_root: str | None = None, clock: Clock | None = None) -> Client:
        """Create an identity in ``home`` and register it with ``server``.

        ``trust_root`` is the fingerprint of the server's sealed-sender trust root as
        its operator handed it out: registration is refused (before anything is sent)
        when the server presents another root."""
        clock = clock or now_ms
        pinned = trust.parse_fingerprint(trust_root) if trust_root is not None else None
        identity = keys.IdentityKeyPair.generate()
        prekeys = core_prekeys.PreKeys.generate(identity, one_time=prekey_store.ONE_TIME_BATCH,
                                                now_ms=clock())
        profile_key, token = os.urandom(32), os.urandom(32)
        registration_id = random.SystemRandom().randint(1, (1 << 31) - 1)
        api = Api(server, proxy)
        try:
            root_answer = await api.request("GET", "/v1/certificate/trust_root", auth=False)
            with _server_data("trust root"):
                root = unb64(root_answer["public_key"])
                if len(root) != 32:
                    raise ValueError("trust root must be 32 bytes")
                statement = root_answer.get("key_statement")
                statement_bytes = unb64(statement) if statement is not None else None
            if pinned is not None and trust.fingerprint(root) != pinned:
                raise TrustRootMismatch(
                    f"the server's trust root {trust.fingerprint(root)} is not the pinned "
                    f"{pinned}; refusing to register (wrong server, or someone in between)")
            min_key_id = trust.verified_min_key_id(statement_bytes, root, 0)
            body: dict[str, Any] = {
                "identity_key": b64(identity.public.to_bytes()),
                "registration_id": registration_id, "token": b64(token),
                "access_key": b64(sealed.derive_access_key(profile_key)),
                **prekey_store.upload_body(prekeys.upload(), full=True),
            }
            if username:
                body["username"] = username
            if invite:
                body["invite"] = invite
            result = await api.request("POST", "/v1/accounts", body, auth=False)
        finally:
            await api.close()
        with _server_data("registration answer"):
            account, device_id = _account_hex(result["account_id"]), int(result["device_id"])
        store = Store.create(home, passphrase, kdf)
        me = SelfRecord(server, account, device_id, token,
                        username.lower() if username else None, profile_key, registration_id,
                        root, min_key_id)
        with store.transaction():
            store.put("self", "me", me.encode())
            store.put("self", "identity", identity.to_bytes())
            prekey_store.store_new(store, prekeys)
        return cls(store, me, identity, proxy, clock)

    @classmethod
    async def open(cls, home: Path, *, passphrase: str | None = None,
                   proxy: str | None = None, clock: Clock | None = None) -> Client:
        """Open a home: the store is verified (rollback) and older layouts migrated."""
        store = Store.open(home, passphrase)
        try:
            raw_me, raw_id = store.get("self", "me"), store.get("self", "identity")
            if raw_me is None or raw_id is None:
                raise ClientError(f"{home} holds no registered identity")
            identity = keys.IdentityKeyPair.from_bytes(raw_id)
            me = SelfRecord.decode(raw_me)
            if prekey_store.migrate(store):
                log.info("moved the prekeys into per-record storage")
        except BaseException:
            store.close()
            raise
        return cls(store, me, identity, proxy, clock)

    async def close(self) -> None:
        self._closed = True
        await self._api.close()
        self._store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- identity, contacts, safety numbers --------------------------------------------

    @property
    def account(self) -> str:
        return self.me.account

    @property
    def identity(self) -> keys.IdentityPublicKey:
        return self._identity.public

    def fingerprint(self) -> str:
        return self._identity.public.fingerprint()

    def trust_root_fingerprint(self) -> str:
        """The pinned sealed-sender trust root, to compare with the operator's."""
        return trust.fingerprint(self.me.trust_root)

    def _announce(self, changed: bool, account: str) -> None:
        """Tell the application about an identity change, after it was committed."""
        if changed and self.on_identity_change is not None:
            self.on_identity_change(account)

    async def resolve(self, who: str) -> Contact:
        """``@username`` or an account id → the contact (created on first use)."""
        who = who.strip()
        if who.startswith("@"):
            name = who[1:].lower()
            for contact in self.contacts():
                if contact.username == name:
                    return contact
            try:
                found = await self._api.request("GET", f"/v1/usernames/{name}")
            except ServerRejected as exc:
                if exc.status in (400, 404):
                    raise UnknownUser(f"no user named @{name} on this server") from None
                raise
            with _server_data("username lookup"):
                account, username = _account_hex(found["account_id"]), found["username"]
            if username != name:
                # A server answering @carol with bob's name could redirect @bob later.
                raise ServerRejected(502, "bad_response",
                                     f"the server answered @{name} with another name")
        else:
            account, username = who.lower(), None
            if len(account) != 32 or any(c not in "0123456789abcdef" for c in account):
                raise UnknownUser(f"'{who}' is neither @username nor a 32-hex account id")
        known = contacts.get(self._store, account)
        if username is None or (known is not None and known.username == username):
            return known or Contact(account)      # saved once it has keys or a name

        def name_it(contact: Contact) -> None:
            contact.username = username
        return contacts.update(self._store, account, name_it)[0]

    def contacts(self) -> list[Contact]:
        return contacts.every(self._store)

    def _number(self, account: str) -> tuple[safety.SafetyNumber, keys.IdentityPublicKey,
                                              bool]:
        """Inside a transaction: the safety number from the identity the sessions use,
        that identity, and whether the contact had to be brought in line with it."""
        contact = contacts.get(self._store, account) or Contact(account)
        remote = contacts.session_identity(self._store, contact)
        if remote is None:
            raise UnknownUser(f"account {account[:8]}… has no published identity key")
        changed = contacts.note_identity(contact, remote)
        if changed:
            contacts.save(self._store, contact)
        number = safety.safety_number(self.identity, bytes.fromhex(self.account), remote,
                                      bytes.fromhex(account))
        return number, remote, changed

    async def _known_identity(self, who: str) -> str:
        contact = await self.resolve(who)
        if contact.identity is None:
            await self._refresh_devices(contact.account)
        return contact.account

    async def safety_number(self, who: str) -> safety.SafetyNumber:
        """The number to compare, computed from the identity key the sessions with
        ``who`` actually use (the contact's when there are none yet)."""
        account = await self._known_identity(who)
        with self._store.transaction():
            number, _, changed = self._number(account)
        self._announce(changed, account)
        return number

    async def verify(self, who: str, expected_digits: str | None = None) -> Contact:
        """Mark the contact's current identity key as verified (after comparing numbers).

        With ``expected_digits`` (the number the user compared) the check and the mark
        are one transaction: the identity marked is the one those digits belong to, and
        a key that changed since is refused instead of being verified silently."""
        account = await self._known_identity(who)
        expected = None if expected_digits is None else "".join(expected_digits.split())
        contact: Contact | None = None
        with self._store.transaction():
            number, remote, changed = self._number(account)
            if expected is None or number.digits == expected:
                contact = contacts.get(self._store, account) or Contact(account)
                contact.identity = remote.to_bytes()
                contact.verified, contact.identity_changed = True, False
                contacts.save(self._store, contact)
        self._announce(changed, account)    # committed even when the digits differ
        if contact is None:
            raise IdentityChanged(f"the safety number with {who} is not the one you compared")
        return contact

    # --- history -----------------------------------------------------------------------

    def history(self, who_account: str, limit: int = 50) -> list[HistoryEntry]:
        return [HistoryEntry.decode(raw) for raw in self._store.history(who_account, limit)]

    def conversations(self) -> list[Conversation]:
        out = []
        for contact in self.contacts():
            last = self.history(contact.account, 1)
            if last:
                out.append(Conversation(contact.account, contact.username, contact.verified,
                                        last[0]))
        return sorted(out, key=lambda c: c.last.timestamp if c.last else 0, reverse=True)

    # --- server keys -------------------------------------------------------------------

    def _min_server_key_id(self) -> int:
        return trust.min_server_key_id(self._store, self.me)

    def _learn_statement(self, data: bytes) -> None:
        self.me = trust.learn_statement(self._store, self.me, data)

    async def _refresh_statement(self) -> None:
        answer = await self._api.request("GET", "/v1/certificate/trust_root", auth=False)
        with _server_data("trust root"):
            statement = answer.get("key_statement")
            data = unb64(statement) if statement is not None else None
        if data is not None:
            self._learn_statement(data)

    # --- sending -----------------------------------------------------------------------

    async def _certificate(self) -> sealed.SenderCertificate:
        if self._cert is not None and self._cert[1] - self._clock() > CERT_REFRESH_MS:
            return self._cert[0]
        answer = await self._api.request("GET", "/v1/certificate")
        try:
            statement = answer.get("key_statement")
            cert = sealed.SenderCertificate.from_bytes(unb64(answer["certificate"]))
            cert.validate(self.me.trust_root, self._clock())
        except (CoreError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ClientError(f"the server issued an unusable sender certificate: {exc}")\
                from None
        if statement is not None:
            with _server_data("key statement"):
                data = unb64(statement)
            self._learn_statement(data)
        if cert.server_certificate.key_id < self._min_server_key_id():
            raise ClientError("the server issued a sender certificate from a revoked "
                              "server key")
        self._cert = (cert, cert.expires_at)
        return cert

    async def _fetch_bundles(self, account: str,
                             only: list[int] | None = None) -> dict[int, keys.PreKeyBundle]:
        """Claim bundles: of the devices in ``only``, or of all devices (each claim uses up
        one of the device's one-time keys, so ask only for what a session needs)."""
        paths = ([f"/v1/keys/{account}/{d}" for d in only] if only is not None
                 else [f"/v1/keys/{account}/*"])
        bundles: dict[int, keys.PreKeyBundle] = {}
        for path in paths:
            answer = await self._api.request("GET", path)
            with _server_data("key bundle"):
                for dev in answer["devices"]:
                    device_id = int(dev["device_id"])
                    if dev.get("signed_prekey") is None or \
                            dev.get("last_resort_kem_prekey") is None:
                        continue
                    opk, pqopk = dev.get("one_time_prekey"), dev.get("one_time_kem_prekey")
                    bundles[device_id] = keys.PreKeyBundle.from_parts(
                        unb64(dev["identity_key"]), unb64(dev["signed_prekey"]),
                        unb64(dev["last_resort_kem_prekey"]),
                        unb64(opk["key"]) if opk else None,
                        unb64(pqopk["key"]) if pqopk else None)
        return bundles

    def _note_bundles(self, account: str, bundles: dict[int, keys.PreKeyBundle],
                      devices: set[int] | None) -> Contact:
        """Record the identities bundles present (and, with ``devices``, the device
        list) in one transaction; a verified contact's changed key is refused after the
        warning is committed."""
        def note(contact: Contact) -> bool:
            changed = False
            for bundle in bundles.values():
                changed = contacts.note_identity(contact, bundle.identity) or changed
            if devices is not None:
                contact.devices = sorted(devices)
            return changed
        contact, changed = contacts.update(self._store, account, note)
        self._announce(changed, account)
        if changed and contact.identity_changed:
            raise IdentityChanged(f"the identity key of {account[:8]}… changed after you "
                                  "verified it; compare safety numbers again")
        return contact

    async def _refresh_devices(self, account: str) -> None:
        """Learn a contact's identity and devices (claims one bundle per device)."""
        bundles = await self._fetch_bundles(account)
        if not bundles:
            raise UnknownUser(f"account {account[:8]}… has no devices with keys")
        self._note_bundles(account, bundles, set(bundles))

    async def send(self, to: str, text: str) -> SentMessage:
        """Encrypt ``text`` for every device of ``to`` and hand it to the server."""
        contact = await self.resolve(to)
        if contact.identity_changed:
            raise IdentityChanged(f"the safety number with {to} changed since you verified "
                                  "it; compare it again and run 'veil verify'")
        content = Content.text_message(text, self._clock(), self.me.profile_key)
        cert = await self._certificate()
        account = contact.account
        async with self._lock:
            via = "direct"
            for attempt in range(3):
                envelopes, contact = await self._encrypt_for(contact, content.encode(), cert)
                stale_key = contact.profile_key
                use_sealed = stale_key is not None
                access = sealed.derive_access_key(stale_key) if stale_key is not None else None
                if use_sealed and self.relay is not None:
                    await self.relay.submit(Submission(
                        bytes.fromhex(account), access,
                        tuple(sorted(envelopes.items()))).encode())
                    via = self.relay.name
                    break
                try:
                    await self._api.request(
                        "PUT", f"/v1/messages/{account}",
                        {"messages": [{"device_id": d, "envelope": b64(e)}
                                      for d, e in envelopes.items()]},
                        auth=not use_sealed, access_key=access)
                    break
                except ServerRejected as exc:
                    if exc.server_code == "mismatched_devices" and attempt < 2:
                        self._reconcile_devices(account, exc.details)
                        continue
                    if exc.status == 401 and use_sealed and attempt < 2:
                        def forget(c: Contact, stale: bytes | None = stale_key) -> None:
                            if c.profile_key == stale:     # not a newer one meanwhile
                                c.profile_key = None       # stale access key: authenticate
                        contact = contacts.update(self._store, account, forget)[0]
                        continue
                    raise
            entry = HistoryEntry(content.id, "out", account, text, content.timestamp, 0)
            self._store.append_history(account, entry.encode())
        return SentMessage(content.id, account, len(envelopes), content.timestamp,
                           use_sealed, via)

    def _reconcile_devices(self, account: str, details: dict[str, object]) -> None:
        extra, missing = details.get("extra_devices"), details.get("missing_devices")
        with self._store.transaction():
            contact = contacts.get(self._store, account) or Contact(account)
            devices = set(contact.devices)
            if isinstance(extra, list):
                for dev in extra:
                    devices.discard(int(dev))
                    sessions.delete(self._store, account, int(dev))
            if isinstance(missing, list):
                devices.update(int(d) for d in missing)
            contact.devices = sorted(devices)
            contacts.save(self._store, contact)

    async def _encrypt_for(self, contact: Contact, plaintext: bytes,
                           cert: sealed.SenderCertificate) -> tuple[dict[int, bytes], Contact]:
        """One sealed envelope per device, and the contact as it was when they were made.

        Sessions are loaded, advanced and saved in one store transaction before anything
        is sent, so neither a crash nor another process on the same home can make a
        message key be used twice. Only sessions with the contact's identity are used,
        and the envelopes are sealed to that same identity; if the contact changed
        between the bundle fetch and that transaction, it is all done again."""
        account = contact.account
        for _ in range(3):
            with self._store.transaction():
                current = contacts.get(self._store, account) or Contact(account)
                if current.identity_changed:
                    raise IdentityChanged(f"the identity key of {account[:8]}… changed; "
                                          "compare safety numbers again")
                have = {d for d in current.devices
                        if contacts.usable_sessions(self._store, current, d)[0]}
            need = None if not current.devices else \
                [d for d in current.devices if d not in have]
            bundles: dict[int, keys.PreKeyBundle] = {}
            if need is None or need:
                bundles = await self._fetch_bundles(account, need)
                current = self._note_bundles(account, bundles, have | set(bundles))
            if not current.devices:
                raise UnknownUser(f"account {account[:8]}… has no devices with keys")
            try:
                with self._store.transaction():
                    return self._seal_all(account, bundles, plaintext, cert)
            except _Retry:
                continue
        raise ClientError(f"the contact {account[:8]}… kept changing while sending; "
                          "try again")

    def _seal_all(self, account: str, bundles: dict[int, keys.PreKeyBundle],
                  plaintext: bytes, cert: sealed.SenderCertificate
                  ) -> tuple[dict[int, bytes], Contact]:
        contact = contacts.get(self._store, account) or Contact(account)
        remote = contact.identity_key()
        if contact.identity_changed or remote is None:
            raise _Retry
        envelopes: dict[int, bytes] = {}
        for device in contact.devices:
            held, _ = contacts.usable_sessions(self._store, contact, device)
            if held:
                message = held[0].encrypt(plaintext)
            elif device in bundles and bundles[device].identity.to_bytes() == contact.identity:
                fresh, message = session.initiate(self._identity, bundles[device], plaintext)
                held = [fresh]
            else:
                raise _Retry             # no usable session and no fitting bundle
            envelopes[device] = sealed.seal(self._identity, cert, remote, message)
            sessions.save(self._store, account, device, held)   # drops the set-aside ones
        return envelopes, contact

    # --- receiving ---------------------------------------------------------------------

    async def pending(self) -> AsyncIterator[IncomingMessage]:
        """Fetch, decrypt and acknowledge what is queued for this device (HTTP), yielding
        each message as soon as it is stored."""
        await self._housekeeping()
        for _ in range(MAX_PAGES):
            answer = await self._api.request("GET", "/v1/messages?limit=100")
            with _server_data("message list"):
                items = [(int(i["id"]), int(i["ts"]), unb64(i["envelope"]))
                         for i in answer["messages"]]
                more = bool(answer.get("more"))
            for envelope_id, ts, envelope in items:
                message = await self._handle(envelope, ts)
                await self._api.request("DELETE", f"/v1/messages/{envelope_id}")
                if message is not None:
                    yield message
            if not more:
                break
        await self.prekeys.run_quietly()

    async def receive_pending(self) -> list[IncomingMessage]:
        """Everything :meth:`pending` yields, as a list."""
        return [message async for message in self.pending()]

    async def messages(self) -> AsyncIterator[IncomingMessage]:
        """Live messages over the WebSocket, reconnecting with backoff until closed.

        A message is yielded before its envelope is acknowledged: if the application stops
        here, the server delivers it again and the store recognises it as seen. While
        connected, a timer (and every frame) runs prekey rotation when it is due."""
        delay = BACKOFF_START_S
        while not self._closed:
            started = time.monotonic()
            try:
                ws = await self._api.websocket()
            except ServerUnreachable:
                await asyncio.sleep(delay * (0.5 + random.random()))   # noqa: S311 - jitter
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            timer: asyncio.Task[None] | None = None
            try:
                await self._housekeeping()
                timer = asyncio.create_task(self.prekeys.timer())
                async for frame in ws:
                    if frame.type.name != "TEXT":
                        break
                    try:
                        event = frame.json()
                        kind = event.get("type")
                        if kind == "envelope":
                            envelope_id, ts = int(event["id"]), int(event["ts"])
                            envelope = unb64(event["envelope"])
                    except (ValueError, TypeError, KeyError, AttributeError):
                        log.warning("the server sent a malformed frame; reconnecting")
                        break
                    if self.prekeys.due():
                        await self.prekeys.run_quietly()
                    if kind == "envelope":
                        message = await self._handle(envelope, ts)
                        if message is not None:
                            yield message
                        try:
                            await ws.send_json({"type": "ack", "ids": [envelope_id]})
                        except (ConnectionError, OSError):
                            break      # redelivered after the reconnect, then seen
                    elif kind == "keys_low":
                        await self.prekeys.run_quietly()
            finally:
                if timer is not None:
                    timer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await timer
                await ws.close()
            if time.monotonic() - started >= STABLE_CONNECTION_S:
                delay = BACKOFF_START_S
            else:
                await asyncio.sleep(delay * (0.5 + random.random()))   # noqa: S311 - jitter
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _handle(self, envelope: bytes, server_ts: int) -> IncomingMessage | None:
        """Open, decrypt, store. None for duplicates and for what can never be read."""
        async with self._lock:
            try:
                message, changed = self._decrypt_and_store(envelope, server_ts)
            except DuplicateMessage:
                return None
            except (CoreError, RecursionError) as exc:
                # Undecryptable forever (forged, corrupt, for an old identity or prekey,
                # counters at their limit): drop it, so the queue moves on.
                code = exc.code if isinstance(exc, CoreError) else "too_deep"
                log.warning("dropped an envelope that cannot be decrypted: %s", code)
                return None
        if message is not None:
            self._announce(changed, message.sender)
        return message

    def _decrypt_and_store(self, envelope: bytes, server_ts: int
                           ) -> tuple[IncomingMessage | None, bool]:
        # The certificate must have been valid when the server accepted the envelope, not
        # when we read it (a recipient offline for a day still gets its messages) — but
        # the server's word on that time is bounded by our clock (trust.certificate_time).
        now = self._clock()
        opened = sealed.open_envelope(self._identity, envelope, self.me.trust_root,
                                      trust.certificate_time(server_ts, now))
        if opened.certificate.server_certificate.key_id < self._min_server_key_id():
            raise UntrustedIdentity("the sender certificate is from a revoked server key")
        account = opened.certificate.account_id.hex()
        device = opened.certificate.device_id
        with self._store.transaction():      # read-modify-write under the store's lock
            contact = contacts.get(self._store, account) or Contact(account)
            held, plaintext, _ = sessions.decrypt(
                sessions.load(self._store, account, device), opened.content, self._identity,
                lambda: prekey_store.load(self._store), opened.sender_identity, now)
            opened.check_session(held[0].remote_identity)
            content = Content.decode(plaintext)
            changed = contacts.note_identity(contact, opened.sender_identity)
            sessions.save(self._store, account, device, held)
            if content.profile_key is not None:
                contact.profile_key = content.profile_key
            if device not in contact.devices:
                contact.devices = sorted({*contact.devices, device})
            contacts.save(self._store, contact)
            seen_key = f"{account}:{content.id}"
            if self._store.get("seen", seen_key) is not None:
                return None, changed
            self._store.put("seen", seen_key, b"")
            self._store.append_history(account, HistoryEntry(
                content.id, "in", account, content.text, content.timestamp, device).encode())
        return IncomingMessage(content.id, account, contact.username, device, content.text,
                               content.timestamp, changed or contact.identity_changed), changed

    # --- housekeeping ------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """On connect: the server's key statement, then prekey rotation and top-up.
        Housekeeping must not stop message delivery: failures are logged."""
        try:
            await self._refresh_statement()
        except ClientError as exc:
            log.warning("could not refresh the server key statement: %s", exc.code)
        await self.prekeys.run_quietly()
