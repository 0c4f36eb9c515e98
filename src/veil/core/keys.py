"""Identity keys and prekeys (Signal PQXDH specification §2.2–§3.2).

An identity is an Ed25519 signing key plus an X25519 key-agreement key that the
signing key certifies. A device publishes, signed by its identity:

- a signed X25519 prekey (``SPK``, rotated weekly: see :mod:`veil.core.prekeys`);
- one-time X25519 prekeys (``OPK``, unsigned, as in the specification);
- signed one-time ML-KEM-768 prekeys (``PQOPK``);
- a signed last-resort ML-KEM-768 prekey (``PQSPK``), used when the one-time ones run out.

Public records serialise to bytes and every signature is checked when they are loaded,
so a :class:`PreKeyBundle` object in memory is always a verified one.
Encodings follow the specification's ``EncodeEC``/``EncodeKEM``: a one-byte type tag
followed by the raw public key; the signatures cover exactly those encodings. Every
public key is parsed canonically (one key, one spelling). The device's secret half
lives in :mod:`veil.core.prekeys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import MalformedMessage, UnsupportedVersion

EC_TYPE_X25519 = 0x05
KEM_TYPE_MLKEM768 = 0x0A
_IDENTITY_BINDING = b"veil identity x25519 v1"
_SPK_LABEL = b"veil signed prekey v1"
_KEM_LABEL = b"veil kem prekey v1"
_RECORD_VERSION = 1
_SECRET_VERSION = 1


def encode_ec(public: bytes) -> bytes:
    return bytes((EC_TYPE_X25519,)) + public


def encode_kem(public: bytes) -> bytes:
    return bytes((KEM_TYPE_MLKEM768,)) + public


# --- identity ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IdentityPublicKey:
    """The public half of an identity: verified on load, immutable, hashable."""

    signing: bytes     # Ed25519, 32 bytes
    dh: bytes          # X25519, 32 bytes
    binding: bytes     # Ed25519 signature over the X25519 key
    _sign_key: ed25519.Ed25519PublicKey = field(compare=False, hash=False, repr=False)
    _dh_key: x25519.X25519PublicKey = field(compare=False, hash=False, repr=False)

    SIZE = 1 + 32 + 32 + 64

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityPublicKey:
        return cls.parse(data, verify=True)

    @classmethod
    def parse(cls, data: bytes, *, verify: bool) -> IdentityPublicKey:
        """``verify=False`` only where the same bytes are checked before use: against a
        verified key (sealed sender's certificate, a known contact) or by
        :meth:`verify_binding`."""
        r = Reader(data, "identity key")
        if r.u8() != _RECORD_VERSION:
            raise UnsupportedVersion("identity key: unknown version")
        signing, dh_pub, binding = r.raw(32), r.raw(32), r.raw(64)
        r.done()
        key = cls(signing, dh_pub, binding, p.ed25519_public(signing), p.x25519_public(dh_pub))
        if verify:
            key.verify_binding()
        return key

    def to_bytes(self) -> bytes:
        return bytes((_RECORD_VERSION,)) + self.signing + self.dh + self.binding

    def verify_binding(self) -> None:
        """Check that the Ed25519 key certifies the X25519 key (for keys parsed unverified)."""
        p.ed25519_verify(self._sign_key, self.binding, _IDENTITY_BINDING + encode_ec(self.dh),
                         "identity key")

    def verify(self, signature: bytes, data: bytes, what: str) -> None:
        p.ed25519_verify(self._sign_key, signature, data, what)

    @property
    def dh_key(self) -> x25519.X25519PublicKey:
        return self._dh_key

    def fingerprint(self) -> str:
        """A short, non-secret label for logs and UIs (not a safety number)."""
        return p.hkdf(self.signing + self.dh, None, b"veil fingerprint", 8).hex()


class IdentityKeyPair:
    """A device's long-term identity. Keep it secret; persist it with :meth:`to_bytes`."""

    __slots__ = ("_dh", "_signing", "public")

    def __init__(self, signing: ed25519.Ed25519PrivateKey, dh_key: x25519.X25519PrivateKey,
                 public: IdentityPublicKey) -> None:
        self._signing = signing
        self._dh = dh_key
        self.public = public

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        return cls._assemble(ed25519.Ed25519PrivateKey.generate(),
                             x25519.X25519PrivateKey.generate())

    @classmethod
    def _assemble(cls, signing: ed25519.Ed25519PrivateKey,
                  dh_key: x25519.X25519PrivateKey) -> IdentityKeyPair:
        sign_pub = signing.public_key()
        dh_pub = dh_key.public_key()
        dh_raw = dh_pub.public_bytes_raw()
        binding = signing.sign(_IDENTITY_BINDING + encode_ec(dh_raw))
        public = IdentityPublicKey(sign_pub.public_bytes_raw(), dh_raw, binding, sign_pub, dh_pub)
        return cls(signing, dh_key, public)

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data)

    def dh(self, public: x25519.X25519PublicKey) -> bytes:
        return p.dh(self._dh, public)

    def to_bytes(self) -> bytes:
        return (Writer().u8(_SECRET_VERSION).raw(self._signing.private_bytes_raw())
                .raw(self._dh.private_bytes_raw()).finish())

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityKeyPair:
        r = Reader(data, "identity key pair")
        if r.u8() != _SECRET_VERSION:
            raise UnsupportedVersion("identity key pair: unknown version")
        signing = ed25519.Ed25519PrivateKey.from_private_bytes(r.raw(32))
        dh_key = p.x25519_private(r.raw(32))
        r.done()
        return cls._assemble(signing, dh_key)


# --- public prekey records --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignedPreKeyPublic:
    """SPK: a signed X25519 prekey."""

    key_id: int
    public: bytes
    signature: bytes

    @staticmethod
    def signed_data(key_id: int, public: bytes) -> bytes:
        """``EncodeEC(SPK)`` as PQXDH signs it, preceded by a label and the key id, so a
        directory cannot relabel which key an id names."""
        return _SPK_LABEL + key_id.to_bytes(4, "big") + encode_ec(public)

    @classmethod
    def create(cls, identity: IdentityKeyPair, key_id: int, public: bytes
               ) -> SignedPreKeyPublic:
        return cls(key_id, public, identity.sign(cls.signed_data(key_id, public)))

    def to_bytes(self) -> bytes:
        return Writer().u8(_RECORD_VERSION).u32(self.key_id).raw(self.public) \
            .raw(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes, identity: IdentityPublicKey,
                   verify: bool = True) -> SignedPreKeyPublic:
        r = Reader(data, "signed prekey")
        if r.u8() != _RECORD_VERSION:
            raise UnsupportedVersion("signed prekey: unknown version")
        record = cls(r.u32(), r.raw(32), r.raw(64))
        r.done()
        p.x25519_public(record.public)
        if verify:
            identity.verify(record.signature, cls.signed_data(record.key_id, record.public),
                            "signed prekey")
        return record


@dataclass(frozen=True, slots=True)
class OneTimePreKeyPublic:
    """OPK: an unsigned one-time X25519 prekey."""

    key_id: int
    public: bytes

    def to_bytes(self) -> bytes:
        return Writer().u8(_RECORD_VERSION).u32(self.key_id).raw(self.public).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> OneTimePreKeyPublic:
        r = Reader(data, "one-time prekey")
        if r.u8() != _RECORD_VERSION:
            raise UnsupportedVersion("one-time prekey: unknown version")
        record = cls(r.u32(), r.raw(32))
        r.done()
        p.x25519_public(record.public)
        return record


@dataclass(frozen=True, slots=True)
class KemPreKeyPublic:
    """PQOPK or PQSPK: a signed ML-KEM-768 prekey; ``last_resort`` tells which."""

    key_id: int
    last_resort: bool
    public: bytes
    signature: bytes

    @staticmethod
    def signed_data(key_id: int, last_resort: bool, public: bytes) -> bytes:
        """``EncodeKEM(PQPK)`` as PQXDH signs it, preceded by a label, the key id and the
        last-resort flag: a directory can neither relabel nor swap the two kinds."""
        return (_KEM_LABEL + key_id.to_bytes(4, "big") + bytes((int(last_resort),))
                + encode_kem(public))

    @classmethod
    def create(cls, identity: IdentityKeyPair, key_id: int, last_resort: bool,
               public: bytes) -> KemPreKeyPublic:
        return cls(key_id, last_resort, public,
                   identity.sign(cls.signed_data(key_id, last_resort, public)))

    def to_bytes(self) -> bytes:
        return (Writer().u8(_RECORD_VERSION).u32(self.key_id).u8(int(self.last_resort))
                .raw(self.public).raw(self.signature).finish())

    @classmethod
    def from_bytes(cls, data: bytes, identity: IdentityPublicKey,
                   verify: bool = True) -> KemPreKeyPublic:
        r = Reader(data, "ML-KEM prekey")
        if r.u8() != _RECORD_VERSION:
            raise UnsupportedVersion("ML-KEM prekey: unknown version")
        key_id, flag = r.u32(), r.u8()
        if flag > 1:
            raise MalformedMessage("ML-KEM prekey: bad last-resort flag")
        record = cls(key_id, bool(flag), r.raw(p.MLKEM768_PUBLIC_LEN), r.raw(64))
        r.done()
        if verify:
            identity.verify(record.signature,
                            cls.signed_data(record.key_id, record.last_resort, record.public),
                            "ML-KEM prekey")
            p.mlkem_public(record.public)
        return record


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What an initiator needs from the directory: verified on load.

    The server hands out each one-time key at most once; when they run out the bundle
    carries none and the initiator uses the last-resort ML-KEM key.
    """

    identity: IdentityPublicKey
    signed_prekey: SignedPreKeyPublic
    last_resort_kem: KemPreKeyPublic
    one_time_prekey: OneTimePreKeyPublic | None = None
    one_time_kem_prekey: KemPreKeyPublic | None = None

    def __post_init__(self) -> None:
        if not self.last_resort_kem.last_resort:
            raise MalformedMessage("bundle: last-resort slot holds a one-time ML-KEM key")
        if self.one_time_kem_prekey is not None and self.one_time_kem_prekey.last_resort:
            raise MalformedMessage("bundle: one-time slot holds a last-resort ML-KEM key")

    def to_bytes(self) -> bytes:
        opk = self.one_time_prekey.to_bytes() if self.one_time_prekey else None
        pqopk = self.one_time_kem_prekey.to_bytes() if self.one_time_kem_prekey else None
        return (Writer().u8(_RECORD_VERSION).var(self.identity.to_bytes())
                .var(self.signed_prekey.to_bytes()).var(self.last_resort_kem.to_bytes())
                .optional(opk).optional(pqopk).finish())

    @classmethod
    def from_bytes(cls, data: bytes) -> PreKeyBundle:
        r = Reader(data, "prekey bundle")
        if r.u8() != _RECORD_VERSION:
            raise UnsupportedVersion("prekey bundle: unknown version")
        parts = [r.var(4096), r.var(4096), r.var(4096), r.optional(4096), r.optional(4096)]
        r.done()
        identity_raw, spk, last, opk, pqopk = parts
        assert identity_raw is not None and spk is not None and last is not None
        return cls.from_parts(identity_raw, spk, last, opk, pqopk)

    @classmethod
    def from_parts(cls, identity: bytes, signed_prekey: bytes, last_resort_kem: bytes,
                   one_time_prekey: bytes | None = None,
                   one_time_kem_prekey: bytes | None = None) -> PreKeyBundle:
        """Assemble from the separate records a directory server returns."""
        ident = IdentityPublicKey.from_bytes(identity)
        return cls(
            ident,
            SignedPreKeyPublic.from_bytes(signed_prekey, ident),
            KemPreKeyPublic.from_bytes(last_resort_kem, ident),
            OneTimePreKeyPublic.from_bytes(one_time_prekey) if one_time_prekey else None,
            KemPreKeyPublic.from_bytes(one_time_kem_prekey, ident)
            if one_time_kem_prekey else None,
        )


@dataclass(frozen=True, slots=True)
class PreKeyUpload:
    """Everything a device publishes to the key directory, as separate records."""

    identity: bytes
    signed_prekey: bytes
    last_resort_kem: bytes
    one_time_prekeys: list[tuple[int, bytes]]
    one_time_kem_prekeys: list[tuple[int, bytes]]

__all__ = [
    "IdentityKeyPair",
    "IdentityPublicKey",
    "KemPreKeyPublic",
    "OneTimePreKeyPublic",
    "PreKeyBundle",
    "PreKeyUpload",
    "SignedPreKeyPublic",
    "encode_ec",
]
