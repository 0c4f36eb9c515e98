"""The client SDK: one async :class:`Client` for apps, the CLI, user interfaces and agents.

It owns the device's keys, sessions, contacts and history (in the encrypted
:class:`~veil.client.store.Store`), talks to one Veil server, and takes care of session
setup (PQXDH), sealed sender, prekey replenishment, reconnects and de-duplication.

Delivery is exactly-once towards the application: an envelope is acknowledged to the
server only after the advanced session, the message and its id are committed to the
store in one transaction; a redelivered envelope then fails with ``DuplicateMessage``
(its key is gone) or matches a seen message id, and is acknowledged without being
shown again.
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

from veil.client import sessions
from veil.client.api import Api, b64, unb64
from veil.client.content import Content
from veil.client.errors import (
    ClientError,
    IdentityChanged,
    ServerRejected,
    ServerUnreachable,
    UnknownUser,
)
from veil.client.records import Contact, HistoryEntry, SelfRecord
from veil.client.store import DEFAULT_KDF, KdfParams, Store
from veil.core import keys, safety, sealed, session
from veil.core.errors import CoreError, DuplicateMessage
from veil.core.submission import Submission

log = logging.getLogger("veil.client")

ONE_TIME_BATCH = 100
REPLENISH_BELOW = 20
CERT_REFRESH_MS = 10 * 60 * 1000
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_CONNECTION_S = 5.0        # a socket that lived shorter does not reset the backoff
MAX_PAGES = 50                   # per receive_pending call: the server cannot loop us
_ACCOUNT_HEX = re.compile(r"[0-9a-f]{32}")


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


def _upload_body(up: keys.PreKeyUpload, full: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "one_time_prekeys": [{"key_id": k, "key": b64(v)} for k, v in up.one_time_prekeys],
        "one_time_kem_prekeys": [{"key_id": k, "key": b64(v)}
                                 for k, v in up.one_time_kem_prekeys],
    }
    if full:
        body["signed_prekey"] = b64(up.signed_prekey)
        body["last_resort_kem_prekey"] = b64(up.last_resort_kem)
    return body


class Client:
    """Open with :meth:`register` (new identity) or :meth:`open`; ``await close()`` after."""

    def __init__(self, store: Store, me: SelfRecord, identity: keys.IdentityKeyPair,
                 proxy: str | None = None) -> None:
        self.relay: Relay | None = None
        self._store = store
        self.me = me
        self._identity = identity
        self._api = Api(me.server, proxy)
        self._api.set_credentials(me.account, me.device_id, me.token)
        self._lock = asyncio.Lock()
        self._closed = False
        self._cert: tuple[sealed.SenderCertificate, int] | None = None
        self.on_identity_change: Callable[[str], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def register(cls, home: Path, server: str, *, username: str | None = None,
                       passphrase: str | None = None, invite: str | None = None,
                       kdf: KdfParams = DEFAULT_KDF, proxy: str | None = None) -> Client:
        """Create an identity in ``home`` and register it with ``server``."""
        identity = keys.IdentityKeyPair.generate()
        prekeys = keys.PreKeys.generate(identity, one_time=ONE_TIME_BATCH)
        profile_key, token = os.urandom(32), os.urandom(32)
        registration_id = random.SystemRandom().randint(1, (1 << 31) - 1)
        api = Api(server, proxy)
        try:
            body: dict[str, Any] = {
                "identity_key": b64(identity.public.to_bytes()),
                "registration_id": registration_id, "token": b64(token),
                "access_key": b64(sealed.derive_access_key(profile_key)),
                **_upload_body(prekeys.upload(), full=True),
            }
            if username:
                body["username"] = username
            if invite:
                body["invite"] = invite
            root_answer = await api.request("GET", "/v1/certificate/trust_root", auth=False)
            result = await api.request("POST", "/v1/accounts", body, auth=False)
        finally:
            await api.close()
        with _server_data("registration answer"):
            trust_root = unb64(root_answer["public_key"])
            if len(trust_root) != 32:
                raise ValueError("trust root must be 32 bytes")
            account, device_id = _account_hex(result["account_id"]), int(result["device_id"])
        store = Store.create(home, passphrase, kdf)
        me = SelfRecord(server, account, device_id, token,
                        username.lower() if username else None, profile_key, registration_id,
                        trust_root)
        with store.transaction():
            store.put("self", "me", me.encode())
            store.put("self", "identity", identity.to_bytes())
            store.put("self", "prekeys", prekeys.to_bytes())
        return cls(store, me, identity, proxy)

    @classmethod
    async def open(cls, home: Path, *, passphrase: str | None = None,
                   proxy: str | None = None) -> Client:
        store = Store.open(home, passphrase)
        raw_me, raw_id = store.get("self", "me"), store.get("self", "identity")
        if raw_me is None or raw_id is None:
            store.close()
            raise ClientError(f"{home} holds no registered identity")
        try:
            identity = keys.IdentityKeyPair.from_bytes(raw_id)
        except CoreError:
            store.close()
            raise
        return cls(store, SelfRecord.decode(raw_me), identity, proxy)

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

    def _contact(self, account: str) -> Contact | None:
        raw = self._store.get("contact", account)
        return None if raw is None else Contact.decode(raw)

    def _save_contact(self, contact: Contact) -> None:
        self._store.put("contact", contact.account, contact.encode())

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
        contact = self._contact(account) or Contact(account, username)
        if username and contact.username != username:
            contact.username = username
            self._save_contact(contact)
        return contact

    def contacts(self) -> list[Contact]:
        return [Contact.decode(raw) for raw in self._store.values("contact")]

    async def safety_number(self, who: str) -> safety.SafetyNumber:
        contact = await self.resolve(who)
        if contact.identity is None:
            await self._refresh_devices(contact)
            contact = self._contact(contact.account) or contact
        remote = contact.identity_key()
        if remote is None:
            raise UnknownUser(f"{who} has no published identity key")
        return safety.safety_number(self.identity, bytes.fromhex(self.account), remote,
                                    bytes.fromhex(contact.account))

    async def verify(self, who: str, expected_digits: str | None = None) -> Contact:
        """Mark the contact's current identity key as verified (after comparing numbers).

        With ``expected_digits`` (the number the user compared), a key that changed in
        between is refused instead of being verified silently."""
        number = await self.safety_number(who)          # makes sure the key is known
        if expected_digits is not None and \
                number.digits != "".join(expected_digits.split()):
            raise IdentityChanged(f"the safety number with {who} is not the one you compared")
        contact = await self.resolve(who)
        contact.verified, contact.identity_changed = True, False
        self._save_contact(contact)
        return contact

    def _note_identity(self, contact: Contact, identity: keys.IdentityPublicKey) -> bool:
        """Record the identity a device presents. True when it replaced a different one."""
        raw = identity.to_bytes()
        if contact.identity is None:
            contact.identity = raw
            return False
        if contact.identity == raw:
            return False
        contact.identity = raw
        if contact.verified:
            contact.verified, contact.identity_changed = False, True
        log.warning("identity key of contact %s… changed", contact.account[:8])
        if self.on_identity_change is not None:
            self.on_identity_change(contact.account)
        return True

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

    # --- sending -----------------------------------------------------------------------

    async def _certificate(self) -> sealed.SenderCertificate:
        if self._cert is not None and self._cert[1] - now_ms() > CERT_REFRESH_MS:
            return self._cert[0]
        answer = await self._api.request("GET", "/v1/certificate")
        try:
            cert = sealed.SenderCertificate.from_bytes(unb64(answer["certificate"]))
            cert.validate(self.me.trust_root, now_ms())
        except (CoreError, KeyError, ValueError, TypeError) as exc:
            raise ClientError(f"the server issued an unusable sender certificate: {exc}")\
                from None
        self._cert = (cert, cert.expires_at)
        return cert

    async def _fetch_bundles(self, contact: Contact,
                             only: list[int] | None = None) -> dict[int, keys.PreKeyBundle]:
        """Claim bundles: of the devices in ``only``, or of all devices (each claim uses up
        one of the device's one-time keys, so ask only for what a session needs)."""
        paths = ([f"/v1/keys/{contact.account}/{d}" for d in only] if only is not None
                 else [f"/v1/keys/{contact.account}/*"])
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

    async def _refresh_devices(self, contact: Contact) -> None:
        """Learn a contact's identity and devices (claims one bundle per device)."""
        bundles = await self._fetch_bundles(contact)
        if not bundles:
            raise UnknownUser(f"account {contact.account[:8]}… has no devices with keys")
        for bundle in bundles.values():
            self._note_identity(contact, bundle.identity)
        contact.devices = sorted(bundles)
        self._save_contact(contact)

    async def send(self, to: str, text: str) -> SentMessage:
        """Encrypt ``text`` for every device of ``to`` and hand it to the server."""
        contact = await self.resolve(to)
        if contact.identity_changed:
            raise IdentityChanged(f"the safety number with {to} changed since you verified "
                                  "it; compare it again and run 'veil verify'")
        content = Content.text_message(text, now_ms(), self.me.profile_key)
        cert = await self._certificate()
        async with self._lock:
            via = "direct"
            for attempt in range(3):
                envelopes = await self._encrypt_for(contact, content.encode(), cert)
                use_sealed = contact.profile_key is not None
                access = (sealed.derive_access_key(contact.profile_key)
                          if contact.profile_key is not None else None)
                if use_sealed and self.relay is not None:
                    await self.relay.submit(Submission(
                        bytes.fromhex(contact.account), access,
                        tuple(sorted(envelopes.items()))).encode())
                    via = self.relay.name
                    break
                try:
                    await self._api.request(
                        "PUT", f"/v1/messages/{contact.account}",
                        {"messages": [{"device_id": d, "envelope": b64(e)}
                                      for d, e in envelopes.items()]},
                        auth=not use_sealed, access_key=access)
                    break
                except ServerRejected as exc:
                    if exc.server_code == "mismatched_devices" and attempt < 2:
                        self._reconcile_devices(contact, exc.details)
                        continue
                    if exc.status == 401 and use_sealed and attempt < 2:
                        contact.profile_key = None       # stale access key: go authenticated
                        continue
                    raise
            entry = HistoryEntry(content.id, "out", contact.account, text, content.timestamp, 0)
            with self._store.transaction():
                self._store.append_history(contact.account, entry.encode())
                self._save_contact(contact)
        return SentMessage(content.id, contact.account, len(envelopes), content.timestamp,
                           use_sealed, via)

    def _reconcile_devices(self, contact: Contact, details: dict[str, object]) -> None:
        extra = details.get("extra_devices")
        missing = details.get("missing_devices")
        devices = set(contact.devices)
        if isinstance(extra, list):
            for dev in extra:
                devices.discard(int(dev))
                sessions.delete(self._store, contact.account, int(dev))
        if isinstance(missing, list):
            devices.update(int(d) for d in missing)
        contact.devices = sorted(devices)
        self._save_contact(contact)

    async def _encrypt_for(self, contact: Contact, plaintext: bytes,
                           cert: sealed.SenderCertificate) -> dict[int, bytes]:
        """One sealed envelope per device. Sessions are loaded, advanced and saved in one
        store transaction before anything is sent, so neither a crash nor another process
        on the same home can make a message key be used twice."""
        have = {d for d in contact.devices
                if sessions.load(self._store, contact.account, d)}
        need = None if not contact.devices else [d for d in contact.devices if d not in have]
        bundles: dict[int, keys.PreKeyBundle] = {}
        if need is None or need:
            bundles = await self._fetch_bundles(contact, need)
            for bundle in bundles.values():
                if self._note_identity(contact, bundle.identity) and contact.identity_changed:
                    self._save_contact(contact)
                    raise IdentityChanged(f"the identity key of {contact.account[:8]}… changed "
                                          "after you verified it; compare safety numbers again")
            contact.devices = sorted(have | set(bundles))
        if not contact.devices:
            raise UnknownUser(f"account {contact.account[:8]}… has no devices with keys")
        remote = contact.identity_key()
        assert remote is not None
        envelopes: dict[int, bytes] = {}
        with self._store.transaction():
            for device in contact.devices:
                held = sessions.load(self._store, contact.account, device)
                if held:
                    message = held[0].encrypt(plaintext)
                elif device in bundles:
                    fresh, message = session.initiate(self._identity, bundles[device], plaintext)
                    held = [fresh]
                else:
                    continue
                envelopes[device] = sealed.seal(self._identity, cert, remote, message)
                sessions.save(self._store, contact.account, device, held)
            self._save_contact(contact)
        return envelopes

    # --- receiving ---------------------------------------------------------------------

    async def pending(self) -> AsyncIterator[IncomingMessage]:
        """Fetch, decrypt and acknowledge what is queued for this device (HTTP), yielding
        each message as soon as it is stored."""
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
        await self._replenish_quietly()

    async def receive_pending(self) -> list[IncomingMessage]:
        """Everything :meth:`pending` yields, as a list."""
        return [message async for message in self.pending()]

    async def messages(self) -> AsyncIterator[IncomingMessage]:
        """Live messages over the WebSocket, reconnecting with backoff until closed.

        A message is yielded before its envelope is acknowledged: if the application stops
        here, the server delivers it again and the store recognises it as seen."""
        delay = BACKOFF_START_S
        while not self._closed:
            started = time.monotonic()
            try:
                ws = await self._api.websocket()
            except ServerUnreachable:
                await asyncio.sleep(delay * (0.5 + random.random()))   # noqa: S311 - jitter
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            await self._replenish_quietly()
            try:
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
                    if kind == "envelope":
                        message = await self._handle(envelope, ts)
                        if message is not None:
                            yield message
                        try:
                            await ws.send_json({"type": "ack", "ids": [envelope_id]})
                        except (ConnectionError, OSError):
                            break      # redelivered after the reconnect, then seen
                    elif kind == "keys_low":
                        await self._replenish_quietly()
            finally:
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
                return self._decrypt_and_store(envelope, server_ts)
            except DuplicateMessage:
                return None
            except (CoreError, RecursionError) as exc:
                # Undecryptable forever (forged, corrupt, for an old identity): drop it.
                code = exc.code if isinstance(exc, CoreError) else "too_deep"
                log.warning("dropped an envelope that cannot be decrypted: %s", code)
                return None

    def _decrypt_and_store(self, envelope: bytes, server_ts: int) -> IncomingMessage | None:
        # The certificate must have been valid when the server accepted the envelope, not
        # when we read it: a recipient offline for a day still gets its messages. (The
        # server could backdate, but it is the certificates' issuer anyway.)
        opened = sealed.open_envelope(self._identity, envelope, self.me.trust_root,
                                      min(server_ts, now_ms()))
        account = opened.certificate.account_id.hex()
        device = opened.certificate.device_id
        with self._store.transaction():      # read-modify-write under the store's lock
            contact = self._contact(account) or Contact(account)
            raw_prekeys = self._store.get("self", "prekeys")
            assert raw_prekeys is not None
            prekeys = keys.PreKeys.from_bytes(raw_prekeys, verify=False)
            held, plaintext, used_prekeys = sessions.decrypt(
                sessions.load(self._store, account, device), opened.content, self._identity,
                prekeys, opened.sender_identity)
            opened.check_session(held[0].remote_identity)
            content = Content.decode(plaintext)
            changed = self._note_identity(contact, opened.sender_identity)
            sessions.save(self._store, account, device, held)
            if used_prekeys:
                self._store.put("self", "prekeys", prekeys.to_bytes())
            if content.profile_key is not None:
                contact.profile_key = content.profile_key
            if device not in contact.devices:
                contact.devices = sorted({*contact.devices, device})
            self._save_contact(contact)
            seen_key = f"{account}:{content.id}"
            if self._store.get("seen", seen_key) is not None:
                return None
            self._store.put("seen", seen_key, b"")
            self._store.append_history(account, HistoryEntry(
                content.id, "in", account, content.text, content.timestamp, device).encode())
        return IncomingMessage(content.id, account, contact.username, device, content.text,
                               content.timestamp, changed or contact.identity_changed)

    # --- prekeys -----------------------------------------------------------------------

    async def _replenish_quietly(self) -> None:
        """Replenishing is housekeeping: its failure must not stop message delivery."""
        try:
            await self._replenish_if_low()
        except ClientError as exc:
            log.warning("could not replenish prekeys: %s", exc.code)

    async def _replenish_if_low(self) -> None:
        """Top up one-time keys when the server runs low, and rotate the signed prekey
        when its replay memory grows large (see ``PreKeys.rotation_due``)."""
        status = await self._api.request("GET", "/v1/keys/status")
        with _server_data("key status"):
            low = min(int(status["one_time_prekeys"]), int(status["one_time_kem_prekeys"]))
        async with self._lock:
            with self._store.transaction():
                raw = self._store.get("self", "prekeys")
                assert raw is not None
                prekeys = keys.PreKeys.from_bytes(raw, verify=False)
                rotate = prekeys.rotation_due
                if low >= REPLENISH_BELOW and not rotate:
                    return
                ec, kem = (prekeys.add_one_time(self._identity, ONE_TIME_BATCH)
                           if low < REPLENISH_BELOW else ([], []))
                spk = prekeys.rotate_signed_prekey(self._identity) if rotate else None
                self._store.put("self", "prekeys", prekeys.to_bytes())
        upload = keys.PreKeyUpload(b"", b"", b"", [(r.key_id, r.to_bytes()) for r in ec],
                                   [(r.key_id, r.to_bytes()) for r in kem])
        body = _upload_body(upload, full=False)
        if spk is not None:
            body["signed_prekey"] = b64(spk.to_bytes())
        await self._api.request("PUT", "/v1/keys", body)
