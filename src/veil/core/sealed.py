"""Sealed sender: the server routes by recipient only and never learns who sent.

Modelled on Signal's sealed sender (v1). The chain of trust is

    trust root (Ed25519, pinned by clients)
      └─ server certificate: key id, server Ed25519 key, expiry — signed by the root
           └─ sender certificate: account, device, identity key, expiry, and (version 2)
              the account's username — signed by the server

An envelope to recipient R with identity X25519 key ``IK_R`` is built in two layers:

1. *ephemeral layer* — ``e`` fresh; ``(chain, k1) = HKDF(DH(e, IK_R))``; the sender's
   identity key is encrypted under ``k1``;
2. *static layer* — ``k2 = HKDF(DH(IK_S, IK_R), salt = chain || c1)``; the padded
   sender certificate and content are encrypted under ``k2``.

Only R can open layer 1, and only the holder of ``IK_S`` could have made layer 2, so a
successful open authenticates the sender's identity key, which must then equal the one
in the certificate and (checked by the caller with :meth:`Unsealed.check_session`) the
one the inner session belongs to. Times are milliseconds since the Unix epoch, passed in.

Both layers' associated data begin with the envelope's version byte, so a version can
never be re-labelled. A certificate's version is bound by its signed domain label.

Envelope versions (docs/crypto.md, "Sealed envelopes"): version 3 (issue 10 §4, item 3)
pads the static layer's plaintext so that the whole envelope is exactly one of a few
sizes (:func:`veil.core.padding.bucket_length`: 2,560 bytes for a first message with a
short text and for ordinary messages alike, then 4, 8, 16, 32, 64 KiB, then Padmé); the
padding is inside the AEAD and is removed strictly: the terminator must be there, every
byte after it zero, and the envelope exactly the size its content calls for. Version 2
(Padmé-padded content, so a first message was about 2,050 bytes and a later one about
770) is still opened, for envelopes queued before the upgrade; it is no longer written.
Known limits of this v1 design, as of Signal's sealed sender v1 (docs/crypto.md): the
static layer gives the sender's identity no forward secrecy (a later theft of the
recipient's identity key reveals who sent recorded envelopes), and whoever steals a
recipient's identity key can make envelopes that open as coming from anyone (key
compromise impersonation), since ``DH(IK_S, IK_R)`` is all that authenticates the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from veil.core import padding
from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import (
    ExpiredCertificate,
    InvalidSignature,
    MalformedMessage,
    UnsupportedVersion,
    UntrustedIdentity,
)
from veil.core.keys import IdentityKeyPair, IdentityPublicKey

VERSION = 1                      # of the certificates (their domain labels say v1)
# A sender certificate that names the sender's username (issue 10 §3: a first message
# shows ``@alice``, vouched for by the server as a username lookup would be) is version
# 2; without a username it stays version 1, byte for byte.
SENDER_VERSION_WITH_USERNAME = 2
MAX_USERNAME = 32
ENVELOPE_VERSION = 3             # written; version 2 is still read
READABLE_ENVELOPE_VERSIONS = (2, 3)
ACCOUNT_ID_LEN = 16
ACCESS_KEY_LEN = 16
MAX_CONTENT = 1 << 20
_SERVER_CERT_DOMAIN = b"veil server certificate v1"
_SENDER_CERT_DOMAIN = b"veil sender certificate v1"
_SENDER_CERT_DOMAIN_V2 = b"veil sender certificate v2"
_EPHEMERAL_INFO = b"VeilSealedSenderEphemeral"
_STATIC_INFO = b"VeilSealedSenderStatic"
_ACCESS_INFO = b"veil access key v1"
_STATEMENT_DOMAIN = b"veil server key statement v1"
_STATEMENT_VERSION = 1
_FINGERPRINT_LABEL = b"veil trust root v1"
_STATIC_CT_LEN = IdentityPublicKey.SIZE + p.AEAD_TAG_LEN
_VERSION_BYTE = bytes((ENVELOPE_VERSION,))
# Everything of a version-3 envelope around its padded plaintext.
_ENVELOPE_OVERHEAD = 1 + 32 + _STATIC_CT_LEN + p.AEAD_TAG_LEN


def envelope_length(inner_length: int) -> int:
    """The size of the version-3 envelope whose static layer holds ``inner_length``
    bytes (content type, sender certificate, content) before padding."""
    return padding.bucket_length(inner_length + 1 + _ENVELOPE_OVERHEAD)


def derive_access_key(profile_key: bytes) -> bytes:
    """The 16-byte key a sender shows the server to deliver sealed to this profile."""
    if len(profile_key) != 32:
        raise MalformedMessage("profile key must be 32 bytes")
    return p.hmac_sha256(profile_key, _ACCESS_INFO)[:ACCESS_KEY_LEN]


def _check_expiry(expires_at: int, now: int, what: str) -> None:
    if now > expires_at:
        raise ExpiredCertificate(f"{what} expired")


# --- certificates -----------------------------------------------------------------------

class TrustRoot:
    """The operator's offline root key; clients pin its public half."""

    __slots__ = ("_key", "public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> TrustRoot:
        return cls(ed25519.Ed25519PrivateKey.generate())

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustRoot:
        if len(data) != 32:
            raise MalformedMessage("trust root key must be 32 bytes")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(data))

    def certify(self, server_public: bytes, key_id: int, expires_at: int) -> ServerCertificate:
        body = ServerCertificate.body(key_id, server_public, expires_at)
        return ServerCertificate(key_id, server_public, expires_at, self._key.sign(body))

    def issue_statement(self, min_key_id: int, issued_at: int) -> KeyStatement:
        """Revoke every server key whose id is below ``min_key_id``."""
        body = KeyStatement.body(min_key_id, issued_at)
        return KeyStatement(min_key_id, issued_at, self._key.sign(body))


def trust_root_fingerprint(root_public: bytes) -> str:
    """What an operator hands to users to pin the root: 32 hex digits, the first 16 bytes
    of SHA-256(label || key) (a second preimage costs 2**128)."""
    return p.sha256(_FINGERPRINT_LABEL + root_public)[:16].hex()


@dataclass(frozen=True, slots=True)
class KeyStatement:
    """Root-signed: "server keys with an id below ``min_key_id`` are no longer valid".

    Clients keep the highest ``min_key_id`` they verified and refuse certificates of
    older server keys, so re-keying a compromised server revokes the stolen key."""

    min_key_id: int
    issued_at: int
    signature: bytes

    @staticmethod
    def body(min_key_id: int, issued_at: int) -> bytes:
        return Writer().raw(_STATEMENT_DOMAIN).u32(min_key_id).u64(issued_at).finish()

    def to_bytes(self) -> bytes:
        return (Writer().u8(_STATEMENT_VERSION).u32(self.min_key_id).u64(self.issued_at)
                .raw(self.signature).finish())

    @classmethod
    def from_bytes(cls, data: bytes, trust_root: bytes) -> KeyStatement:
        """Decode and verify under the pinned root."""
        r = Reader(data, "server key statement")
        if r.u8() != _STATEMENT_VERSION:
            raise UnsupportedVersion("server key statement: unknown version")
        statement = cls(r.u32(), r.u64(), r.raw(64))
        r.done()
        p.ed25519_verify(p.ed25519_public(trust_root), statement.signature,
                         cls.body(statement.min_key_id, statement.issued_at),
                         "server key statement")
        return statement


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    key_id: int
    server_public: bytes
    expires_at: int
    signature: bytes

    @staticmethod
    def body(key_id: int, server_public: bytes, expires_at: int) -> bytes:
        return (Writer().raw(_SERVER_CERT_DOMAIN).u32(key_id).raw(server_public)
                .u64(expires_at).finish())

    def to_bytes(self) -> bytes:
        return (Writer().u8(VERSION).u32(self.key_id).raw(self.server_public)
                .u64(self.expires_at).raw(self.signature).finish())

    @classmethod
    def read(cls, r: Reader) -> ServerCertificate:
        if r.u8() != VERSION:
            raise UnsupportedVersion("server certificate: unknown version")
        return cls(r.u32(), r.raw(32), r.u64(), r.raw(64))

    def validate(self, trust_root: bytes, now: int) -> None:
        root = p.ed25519_public(trust_root)
        p.ed25519_verify(root, self.signature,
                         self.body(self.key_id, self.server_public, self.expires_at),
                         "server certificate")
        _check_expiry(self.expires_at, now, "server certificate")


class ServerKey:
    """The server's signing key with its certificate; issues sender certificates."""

    __slots__ = ("_key", "certificate")

    def __init__(self, key: ed25519.Ed25519PrivateKey, certificate: ServerCertificate) -> None:
        if certificate.server_public != key.public_key().public_bytes_raw():
            raise InvalidSignature("server certificate does not match the server key")
        self._key = key
        self.certificate = certificate

    @classmethod
    def generate(cls, root: TrustRoot, key_id: int, expires_at: int) -> ServerKey:
        key = ed25519.Ed25519PrivateKey.generate()
        return cls(key, root.certify(key.public_key().public_bytes_raw(), key_id, expires_at))

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw() + self.certificate.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ServerKey:
        r = Reader(data, "server key")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(r.raw(32))
        cert = ServerCertificate.read(r)
        r.done()
        return cls(key, cert)

    def issue(self, account_id: bytes, device_id: int, identity: IdentityPublicKey,
              expires_at: int, username: str | None = None) -> SenderCertificate:
        if len(account_id) != ACCOUNT_ID_LEN:
            raise MalformedMessage("account id must be 16 bytes")
        _check_username(username)
        body = SenderCertificate.body(account_id, device_id, identity.to_bytes(), expires_at,
                                      self.certificate, username)
        return SenderCertificate(account_id, device_id, identity, expires_at, self.certificate,
                                 self._key.sign(body), username)


def _check_username(username: str | None) -> None:
    if username is not None and not (
            0 < len(username) <= MAX_USERNAME and username.isascii() and username.isprintable()):
        raise MalformedMessage("sender certificate: the username must be 1-32 printable "
                               "ASCII characters")


@dataclass(frozen=True, slots=True)
class SenderCertificate:
    account_id: bytes
    device_id: int
    identity: IdentityPublicKey
    expires_at: int
    server_certificate: ServerCertificate
    signature: bytes
    username: str | None = None      # as the server knew it when it signed (version 2)

    @staticmethod
    def body(account_id: bytes, device_id: int, identity: bytes, expires_at: int,
             server_certificate: ServerCertificate, username: str | None = None) -> bytes:
        w = Writer().raw(_SENDER_CERT_DOMAIN if username is None else _SENDER_CERT_DOMAIN_V2)
        w.raw(account_id).u32(device_id).raw(identity).u64(expires_at)
        if username is not None:
            w.var(username.encode("ascii"))
        return w.var(server_certificate.to_bytes()).finish()

    def to_bytes(self) -> bytes:
        w = Writer().u8(VERSION if self.username is None else SENDER_VERSION_WITH_USERNAME)
        w.raw(self.account_id).u32(self.device_id).raw(self.identity.to_bytes())
        w.u64(self.expires_at)
        if self.username is not None:
            w.var(self.username.encode("ascii"))
        return w.raw(self.server_certificate.to_bytes()).raw(self.signature).finish()

    @classmethod
    def read(cls, r: Reader) -> SenderCertificate:
        version = r.u8()
        if version not in (VERSION, SENDER_VERSION_WITH_USERNAME):
            raise UnsupportedVersion("sender certificate: unknown version")
        account_id, device_id = r.raw(ACCOUNT_ID_LEN), r.u32()
        identity = IdentityPublicKey.from_bytes(r.raw(IdentityPublicKey.SIZE))
        expires_at = r.u64()
        username = None
        if version == SENDER_VERSION_WITH_USERNAME:
            try:
                username = r.var(MAX_USERNAME).decode("ascii")
            except UnicodeDecodeError:
                raise MalformedMessage("sender certificate: the username is not ASCII") \
                    from None
            _check_username(username)
        return cls(account_id, device_id, identity, expires_at, ServerCertificate.read(r),
                   r.raw(64), username)

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderCertificate:
        r = Reader(data, "sender certificate")
        cert = cls.read(r)
        r.done()
        return cert

    def validate(self, trust_root: bytes, now: int) -> None:
        """Check the whole chain up to the pinned root, and both expiries."""
        self.server_certificate.validate(trust_root, now)
        server_key = p.ed25519_public(self.server_certificate.server_public)
        body = self.body(self.account_id, self.device_id, self.identity.to_bytes(),
                         self.expires_at, self.server_certificate, self.username)
        p.ed25519_verify(server_key, self.signature, body, "sender certificate")
        _check_expiry(self.expires_at, now, "sender certificate")


# --- envelopes --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Unsealed:
    """An opened envelope: who sent it (authenticated) and the inner content."""

    certificate: SenderCertificate
    content_type: int
    content: bytes

    @property
    def sender_identity(self) -> IdentityPublicKey:
        return self.certificate.identity

    def check_session(self, remote_identity: IdentityPublicKey) -> None:
        """The inner session must belong to the identity the certificate names."""
        if remote_identity != self.certificate.identity:
            raise UntrustedIdentity("sealed sender's identity differs from the session's")


def _ephemeral_keys(shared: bytes, e_pub: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    """(chain key, message key of the first layer)."""
    out = p.hkdf(shared, e_pub + recipient, _EPHEMERAL_INFO, 32 + p.MESSAGE_KEY_LEN)
    return out[:32], out[32:]


def seal(sender: IdentityKeyPair, certificate: SenderCertificate,
         recipient: IdentityPublicKey, content: bytes, content_type: int = 1) -> bytes:
    """Encrypt ``content`` so that only ``recipient`` learns it came from ``sender``."""
    if certificate.identity != sender.public:
        raise UntrustedIdentity("sender certificate is for another identity key")
    if len(content) > MAX_CONTENT:
        raise MalformedMessage("sealed content is too large")
    ephemeral = p.x25519_generate()
    e_pub = ephemeral.public_key().public_bytes_raw()
    chain, k1 = _ephemeral_keys(p.dh(ephemeral, recipient.dh_key), e_pub, recipient.dh)
    static_ct = p.seal_message(k1, sender.public.to_bytes(), _VERSION_BYTE + e_pub)
    k2 = p.hkdf(sender.dh(recipient.dh_key), chain + static_ct, _STATIC_INFO,
                p.MESSAGE_KEY_LEN)
    inner = (Writer().u8(content_type).raw(certificate.to_bytes()).var(content).finish())
    padded = padding.pad_to(inner, envelope_length(len(inner)) - _ENVELOPE_OVERHEAD)
    body = p.seal_message(k2, padded, _VERSION_BYTE + e_pub + static_ct)
    return _VERSION_BYTE + e_pub + static_ct + body


def open_envelope(recipient: IdentityKeyPair, envelope: bytes, trust_root: bytes,
                  now: int) -> Unsealed:
    """Decrypt and authenticate a sealed envelope; raises a ``CoreError`` on any fault."""
    if not isinstance(envelope, bytes) or len(envelope) < 1 + 32 + _STATIC_CT_LEN + 16:
        raise MalformedMessage("sealed envelope is truncated")
    if envelope[0] not in READABLE_ENVELOPE_VERSIONS:
        raise UnsupportedVersion("sealed envelope: unknown version")
    version = envelope[:1]
    e_pub = envelope[1:33]
    static_ct = envelope[33:33 + _STATIC_CT_LEN]
    body = envelope[33 + _STATIC_CT_LEN:]
    chain, k1 = _ephemeral_keys(recipient.dh(p.x25519_public(e_pub)), e_pub,
                                recipient.public.dh)
    # Not verified here: the certificate (whose signature covers these same bytes and
    # whose identity is verified when parsed) must equal it, checked below.
    sender = IdentityPublicKey.parse(p.open_message(k1, static_ct, version + e_pub),
                                     verify=False)
    k2 = p.hkdf(recipient.dh(sender.dh_key), chain + static_ct, _STATIC_INFO,
                p.MESSAGE_KEY_LEN)
    inner = padding.unpad(p.open_message(k2, body, version + e_pub + static_ct))
    if version == _VERSION_BYTE and len(envelope) != envelope_length(len(inner)):
        # Authenticated, but not the one padding this content calls for.
        raise MalformedMessage("sealed envelope is not padded to its size class")
    r = Reader(inner, "sealed content")
    content_type = r.u8()
    certificate = SenderCertificate.read(r)
    content = r.var(MAX_CONTENT)
    r.done()
    if certificate.identity.to_bytes() != sender.to_bytes():
        raise UntrustedIdentity("sender certificate names another identity than the sender's")
    certificate.validate(trust_root, now)
    return Unsealed(certificate, content_type, content)

__all__ = [
    "ENVELOPE_VERSION",
    "READABLE_ENVELOPE_VERSIONS",
    "KeyStatement",
    "SenderCertificate",
    "ServerKey",
    "TrustRoot",
    "derive_access_key",
    "envelope_length",
    "open_envelope",
    "seal",
    "trust_root_fingerprint",
]
