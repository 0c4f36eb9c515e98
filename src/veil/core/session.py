"""1:1 sessions: PQXDH to start, the Double Ratchet after, with padded plaintexts.

Wire format (version 2), every integer big-endian:

- ratchet message: ``0x02 | 0x01 | header (40 bytes, or 68 encrypted) | AEAD ciphertext``
- initial ("prekey") message: ``0x02 | 0x02 | flags | PQXDH header | var(ratchet message)``

The initiator sends prekey messages until it receives its first reply, so the
responder can set the session up from whichever of them arrives first (as Signal
does). ``flags`` bit 0 selects header encryption (Double Ratchet §4) for the session.

What is authenticated: every message's AEAD covers the session AD — both identities
and the transcript hash of the initial message's ``version | type | flags | PQXDH
header`` (see :mod:`veil.core.pqxdh`) — then the ratchet message's own version and
type bytes and its ratchet header. Version 1 bound neither the version bytes nor the
initial header; its sessions are not read any more and are set up anew.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core import padding, pqxdh
from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import MalformedMessage, UnsupportedVersion, UntrustedIdentity
from veil.core.keys import IdentityKeyPair, IdentityPublicKey, PreKeyBundle
from veil.core.prekeys import PreKeys
from veil.core.ratchet import ENCRYPTED_HEADER_LEN, HEADER_LEN, RatchetState

VERSION = 2
TYPE_MESSAGE = 1
TYPE_PREKEY = 2
FLAG_HEADER_ENCRYPTION = 1
MAX_MESSAGE = 1 << 20           # 1 MiB of ciphertext per message
_STATE_VERSION = 2
_HE_INFO = b"VeilHeaderKeys"
_MESSAGE_PREFIX = bytes((VERSION, TYPE_MESSAGE))
_PREKEY_PREFIX = bytes((VERSION, TYPE_PREKEY))


@dataclass(frozen=True, slots=True)
class PreKeyMessage:
    """A parsed initial message: the PQXDH header plus the first ratchet message."""

    header_encryption: bool
    header: pqxdh.InitialHeader
    message: bytes
    digest: bytes            # transcript hash: all later copies must match

    @classmethod
    def parse(cls, data: bytes) -> PreKeyMessage:
        r = Reader(data, "prekey message")
        if r.u8() != VERSION:
            raise UnsupportedVersion("message: unknown version")
        if r.u8() != TYPE_PREKEY:
            raise MalformedMessage("not a prekey message")
        flags = r.u8()
        if flags & ~FLAG_HEADER_ENCRYPTION:
            raise MalformedMessage("prekey message: unknown flags")
        header = pqxdh.InitialHeader.read(r)
        digest = pqxdh.transcript_hash(data[:r.offset])
        message = r.var(MAX_MESSAGE)
        r.done()
        return cls(bool(flags & FLAG_HEADER_ENCRYPTION), header, message, digest)


def is_prekey_message(data: bytes) -> bool:
    """True for an initial message (route it to :func:`respond` if no session matches)."""
    return len(data) >= 2 and data[0] == VERSION and data[1] == TYPE_PREKEY


def _split_keys(sk: bytes, use_he: bool) -> tuple[bytes, bytes | None, bytes | None]:
    """The root key and, with header encryption, the two shared header keys (§4.3)."""
    if not use_he:
        return sk, None, None
    out = p.hkdf(sk, None, _HE_INFO, 96)
    return out[:32], out[32:64], out[64:]


class Session:
    """A 1:1 session with one remote device. Persist it with :meth:`to_bytes`."""

    __slots__ = ("_ad", "_initial", "_initial_digest", "_message_ad", "_ratchet", "base_key",
                 "local_identity", "remote_identity")

    def __init__(self, local_identity: IdentityPublicKey, remote_identity: IdentityPublicKey,
                 ad: bytes, base_key: bytes, ratchet: RatchetState,
                 initial: bytes | None, initial_digest: bytes) -> None:
        self.local_identity = local_identity
        self.remote_identity = remote_identity
        self.base_key = base_key         # the initiator's ephemeral key: names the session
        self._initial_digest = initial_digest
        self._ad = ad
        self._message_ad = ad + _MESSAGE_PREFIX
        self._ratchet = ratchet
        self._initial = initial          # version, type, flags, PQXDH header: until a reply

    @property
    def header_encryption(self) -> bool:
        return self._ratchet.use_he

    @property
    def acknowledged(self) -> bool:
        """False while we still prefix our messages with the PQXDH header."""
        return self._initial is None

    def encrypt(self, plaintext: bytes) -> bytes:
        header, ciphertext = self._ratchet.encrypt(padding.pad(plaintext), self._message_ad)
        message = _MESSAGE_PREFIX + header + ciphertext
        if self._initial is None:
            return message
        return self._initial + len(message).to_bytes(4, "big") + message

    def decrypt(self, data: bytes, *, now_ms: int | None = None) -> bytes:
        """Decrypt one message; on any error the session is left exactly as it was.

        With ``now_ms`` (the caller's clock), skipped message keys that waited longer
        than ``ratchet.MAX_SKIPPED_AGE_MS`` are deleted first."""
        if not isinstance(data, bytes | bytearray):
            raise MalformedMessage("message must be bytes")
        if len(data) > MAX_MESSAGE + 4096:
            raise MalformedMessage("message is too large")
        if is_prekey_message(data):
            parsed = PreKeyMessage.parse(bytes(data))
            if not p.constant_time_equal(parsed.digest, self._initial_digest):
                raise MalformedMessage("prekey message belongs to another session")
            data = parsed.message
        return self._decrypt_message(data if type(data) is bytes else bytes(data), now_ms)

    def _decrypt_message(self, data: bytes, now_ms: int | None) -> bytes:
        header_len = ENCRYPTED_HEADER_LEN if self._ratchet.use_he else HEADER_LEN
        if len(data) < 2 + header_len + p.AEAD_TAG_LEN:
            raise MalformedMessage("message is truncated")
        if data[0] != VERSION:
            raise UnsupportedVersion("message: unknown version")
        if data[1] != TYPE_MESSAGE:
            raise MalformedMessage("not a ratchet message")
        header, ciphertext = data[2:2 + header_len], data[2 + header_len:]
        plaintext = self._ratchet.decrypt(header, ciphertext, self._message_ad, padding.unpad,
                                          now_ms)
        if self._initial is not None and self._ratchet.ckr is not None:
            self._initial = None     # a reply arrived: the peer has the session
        return plaintext

    # persistence --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer().u8(_STATE_VERSION).var(self.local_identity.to_bytes())
        w.var(self.remote_identity.to_bytes()).var(self._ad).raw(self.base_key)
        w.raw(self._initial_digest).optional(self._initial)
        self._ratchet.write(w)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        r = Reader(data, "session state")
        if r.u8() != _STATE_VERSION:
            raise UnsupportedVersion("session state: unknown version")
        local = IdentityPublicKey.from_bytes(r.var(IdentityPublicKey.SIZE))
        remote = IdentityPublicKey.from_bytes(r.var(IdentityPublicKey.SIZE))
        ad, base_key, digest = r.var(512), r.raw(32), r.raw(32)
        initial = r.optional(8192)
        ratchet = RatchetState.read(r)
        r.done()
        if ad not in (pqxdh.associated_data(local, remote, digest),
                      pqxdh.associated_data(remote, local, digest)):
            raise MalformedMessage("session state: associated data does not match identities")
        return cls(local, remote, ad, base_key, ratchet, initial, digest)


def initiate(identity: IdentityKeyPair, bundle: PreKeyBundle, plaintext: bytes, *,
             header_encryption: bool = False,
             own_device: bool = False) -> tuple[Session, bytes]:
    """Start a session from a verified bundle; returns it and the initial message.
    ``own_device``: the bundle is another device of this account (same identity)."""
    agreement = pqxdh.initiate(identity, bundle, own_device=own_device)
    rk, hka, nhkb = _split_keys(agreement.shared_key, header_encryption)
    assert agreement.remote_ratchet_key is not None
    ratchet = RatchetState.for_initiator(rk, agreement.remote_ratchet_key, header_encryption,
                                         hka, nhkb)
    w = Writer().raw(_PREKEY_PREFIX).u8(FLAG_HEADER_ENCRYPTION if header_encryption else 0)
    agreement.header.write(w)
    initial = w.finish()
    digest = pqxdh.transcript_hash(initial)
    session = Session(identity.public, bundle.identity,
                      pqxdh.associated_data(identity.public, bundle.identity, digest),
                      agreement.header.base_key, ratchet, initial, digest)
    return session, session.encrypt(plaintext)


def respond(identity: IdentityKeyPair, prekeys: PreKeys, message: bytes, *,
            expected_identity: IdentityPublicKey | None = None,
            now_ms: int | None = None) -> tuple[Session, bytes]:
    """Accept an initial message: returns the session and the first plaintext.

    The one-time prekeys it used are deleted from ``prekeys`` only once the message
    authenticated; a replay of an accepted initial message raises ``DuplicateMessage``.
    With ``expected_identity`` (already verified: a known contact, or the identity a
    sealed-sender certificate vouched for), a different sender identity raises
    ``UntrustedIdentity`` before any key is touched; without it, the sender identity's
    own binding signature is checked.
    """
    parsed = PreKeyMessage.parse(message)
    header = parsed.header
    if expected_identity is None:
        header.identity.verify_binding()
    elif header.identity.to_bytes() != expected_identity.to_bytes():
        raise UntrustedIdentity("sender's identity key differs from the one we trust")
    agreement = pqxdh.respond(identity, prekeys, header)
    rk, hka, nhkb = _split_keys(agreement.shared_key, parsed.header_encryption)
    assert agreement.local_ratchet_key is not None
    ratchet = RatchetState.for_responder(rk, agreement.local_ratchet_key,
                                         parsed.header_encryption, hka, nhkb)
    session = Session(identity.public, header.identity,
                      pqxdh.associated_data(header.identity, identity.public, parsed.digest),
                      header.base_key, ratchet, None, parsed.digest)
    plaintext = session._decrypt_message(parsed.message, now_ms)
    prekeys.consume(header.base_key, header.signed_prekey_id, header.one_time_prekey_id,
                    header.kem_prekey_id, header.kem_last_resort)
    return session, plaintext

__all__ = [
    "TYPE_MESSAGE",
    "TYPE_PREKEY",
    "VERSION",
    "PreKeyMessage",
    "Session",
    "initiate",
    "is_prekey_message",
    "respond",
]
