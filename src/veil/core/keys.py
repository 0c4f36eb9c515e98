"""Identity keys and prekeys (Signal PQXDH specification §2.2–§3.2).

An identity is an Ed25519 signing key plus an X25519 key-agreement key that the
signing key certifies. A device publishes, signed by its identity:

- a signed X25519 prekey (``SPK``, rotated now and then);
- one-time X25519 prekeys (``OPK``, unsigned, as in the specification);
- signed one-time ML-KEM-768 prekeys (``PQOPK``);
- a signed last-resort ML-KEM-768 prekey (``PQSPK``), used when the one-time ones run out.

Public records serialise to bytes and every signature is checked when they are loaded,
so a :class:`PreKeyBundle` object in memory is always a verified one.
Encodings follow the specification's ``EncodeEC``/``EncodeKEM``: a one-byte type tag
followed by the raw public key; the signatures cover exactly those encodings.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import MalformedMessage, UnknownPreKey, UnsupportedVersion

EC_TYPE_X25519 = 0x05
KEM_TYPE_MLKEM768 = 0x0A
_IDENTITY_BINDING = b"veil identity x25519 v1"
_SPK_LABEL = b"veil signed prekey v1"
_KEM_LABEL = b"veil kem prekey v1"
_RECORD_VERSION = 1
_SECRET_VERSION = 1
MAX_ONE_TIME = 10_000
# Base keys of accepted initial messages that used no one-time key, remembered for as
# long as the signed prekey they name is held (PQXDH §4.2): an older one is refused as
# unknown once that prekey is rotated out, so no window can be flushed by flooding.
# At this many per signed prekey the device must rotate it (``rotation_due``); past
# twice as many it refuses such messages rather than forget.
SEEN_BASE_KEYS_ROTATE = 50_000


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


# --- secret prekeys ---------------------------------------------------------------------

class PreKeys:
    """The secret half of a device's prekeys, kept by the device.

    One-time keys are deleted when an initial message that used them is accepted
    (:meth:`consume`); the last-resort key and the signed prekey stay until rotated.
    """

    def __init__(self, identity: IdentityPublicKey) -> None:
        self.identity = identity
        self._next_id = 1
        self.signed_prekeys: OrderedDict[int, tuple[x25519.X25519PrivateKey,
                                                    SignedPreKeyPublic]] = OrderedDict()
        self.one_time: OrderedDict[int, tuple[x25519.X25519PrivateKey,
                                              OneTimePreKeyPublic]] = OrderedDict()
        self.one_time_kem: OrderedDict[int, tuple[bytes, KemPreKeyPublic]] = OrderedDict()
        self.last_resort: OrderedDict[int, tuple[bytes, KemPreKeyPublic]] = OrderedDict()
        # signed prekey id -> base keys of accepted initial messages without one-time keys
        self.seen_base_keys: dict[int, set[bytes]] = {}

    # generation ---------------------------------------------------------------------

    @classmethod
    def generate(cls, identity: IdentityKeyPair, one_time: int = 100) -> PreKeys:
        keys = cls(identity.public)
        keys.rotate_signed_prekey(identity)
        keys.rotate_last_resort(identity)
        keys.add_one_time(identity, one_time)
        return keys

    def _take_id(self) -> int:
        key_id = self._next_id
        # Ids stay below 2**31 so every directory (and signed 32-bit field) can hold them.
        self._next_id = (self._next_id % 0x7FFFFFFF) + 1
        return key_id

    def rotate_signed_prekey(self, identity: IdentityKeyPair, keep: int = 2) -> SignedPreKeyPublic:
        """A new SPK; the previous ``keep - 1`` stay so in-flight initial messages work."""
        private = x25519.X25519PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        record = SignedPreKeyPublic.create(identity, self._take_id(), public)
        self.signed_prekeys[record.key_id] = (private, record)
        while len(self.signed_prekeys) > keep:
            old_id, _ = self.signed_prekeys.popitem(last=False)
            self.seen_base_keys.pop(old_id, None)
        return record

    def rotate_last_resort(self, identity: IdentityKeyPair, keep: int = 2) -> KemPreKeyPublic:
        seed, record = self._new_kem(identity, last_resort=True)
        self.last_resort[record.key_id] = (seed, record)
        while len(self.last_resort) > keep:
            self.last_resort.popitem(last=False)
        return record

    def _new_kem(self, identity: IdentityKeyPair, last_resort: bool) -> tuple[bytes,
                                                                               KemPreKeyPublic]:
        private = mlkem.MLKEM768PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        record = KemPreKeyPublic.create(identity, self._take_id(), last_resort, public)
        return private.private_bytes_raw(), record

    def add_one_time(self, identity: IdentityKeyPair, count: int) -> tuple[
            list[OneTimePreKeyPublic], list[KemPreKeyPublic]]:
        """Top up ``count`` one-time X25519 and ``count`` one-time ML-KEM prekeys.

        At most ``MAX_ONE_TIME`` of each are kept: the oldest go first. They are the ones
        a directory handed out earliest, so the ones most likely claimed by someone who
        never wrote (anyone can claim keys to make a device pile them up)."""
        if not 0 <= count <= MAX_ONE_TIME:
            raise ValueError(f"one-time prekeys are capped at {MAX_ONE_TIME}")
        for table in (self.one_time, self.one_time_kem):
            while len(table) + count > MAX_ONE_TIME:
                table.popitem(last=False)
        new_ec: list[OneTimePreKeyPublic] = []
        new_kem: list[KemPreKeyPublic] = []
        for _ in range(count):
            private = x25519.X25519PrivateKey.generate()
            record = OneTimePreKeyPublic(self._take_id(), private.public_key().public_bytes_raw())
            self.one_time[record.key_id] = (private, record)
            new_ec.append(record)
            seed, kem_record = self._new_kem(identity, last_resort=False)
            self.one_time_kem[kem_record.key_id] = (seed, kem_record)
            new_kem.append(kem_record)
        return new_ec, new_kem

    # public views -------------------------------------------------------------------

    def _current_spk(self) -> SignedPreKeyPublic:
        return next(reversed(self.signed_prekeys.values()))[1]

    def _current_last_resort(self) -> KemPreKeyPublic:
        return next(reversed(self.last_resort.values()))[1]

    def bundle(self) -> PreKeyBundle:
        """A bundle with the oldest unused one-time keys (a directory normally does this)."""
        opk = next(iter(self.one_time.values()))[1] if self.one_time else None
        pqopk = next(iter(self.one_time_kem.values()))[1] if self.one_time_kem else None
        return PreKeyBundle(self.identity, self._current_spk(), self._current_last_resort(),
                            opk, pqopk)

    def upload(self) -> PreKeyUpload:
        return PreKeyUpload(
            self.identity.to_bytes(), self._current_spk().to_bytes(),
            self._current_last_resort().to_bytes(),
            [(k, rec.to_bytes()) for k, (_, rec) in self.one_time.items()],
            [(k, rec.to_bytes()) for k, (_, rec) in self.one_time_kem.items()],
        )

    # use by the responder -----------------------------------------------------------

    def signed_prekey_private(self, key_id: int) -> x25519.X25519PrivateKey:
        entry = self.signed_prekeys.get(key_id)
        if entry is None:
            raise UnknownPreKey(f"signed prekey {key_id} is not held (rotated out?)")
        return entry[0]

    def one_time_private(self, key_id: int) -> x25519.X25519PrivateKey:
        entry = self.one_time.get(key_id)
        if entry is None:
            raise UnknownPreKey(f"one-time prekey {key_id} was already used or never issued")
        return entry[0]

    def kem_private(self, key_id: int, last_resort: bool) -> mlkem.MLKEM768PrivateKey:
        table = self.last_resort if last_resort else self.one_time_kem
        entry = table.get(key_id)
        if entry is None:
            kind = "last-resort" if last_resort else "one-time"
            raise UnknownPreKey(f"{kind} ML-KEM prekey {key_id} was already used or never issued")
        return p.mlkem_private(entry[0])

    def base_key_seen(self, signed_prekey_id: int, base_key: bytes) -> bool:
        return base_key in self.seen_base_keys.get(signed_prekey_id, ())

    def check_replay_capacity(self, signed_prekey_id: int) -> None:
        """Refuse (rather than forget) once a signed prekey's replay memory is full."""
        if len(self.seen_base_keys.get(signed_prekey_id, ())) >= 2 * SEEN_BASE_KEYS_ROTATE:
            raise UnknownPreKey(f"signed prekey {signed_prekey_id} has answered too many "
                                "initial messages without one-time keys; fetch a new bundle")

    @property
    def rotation_due(self) -> bool:
        """The current signed prekey's replay memory is getting large: rotate it."""
        current = next(reversed(self.signed_prekeys))
        return len(self.seen_base_keys.get(current, ())) >= SEEN_BASE_KEYS_ROTATE

    def consume(self, base_key: bytes, signed_prekey_id: int, one_time_id: int | None,
                kem_id: int, kem_last_resort: bool) -> None:
        """Forget the one-time keys an accepted initial message used. Without any, its
        base key is remembered while the signed prekey lives, so a replay is refused."""
        if one_time_id is not None:
            self.one_time.pop(one_time_id, None)
        if not kem_last_resort:
            self.one_time_kem.pop(kem_id, None)
        if one_time_id is None and kem_last_resort:
            self.seen_base_keys.setdefault(signed_prekey_id, set()).add(base_key)

    @property
    def one_time_count(self) -> int:
        return min(len(self.one_time), len(self.one_time_kem))

    # persistence --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer().u8(_SECRET_VERSION).var(self.identity.to_bytes()).u32(self._next_id)
        w.u32(len(self.signed_prekeys))
        for private, spk in self.signed_prekeys.values():
            w.raw(private.private_bytes_raw()).var(spk.to_bytes())
        w.u32(len(self.one_time))
        for private, opk in self.one_time.values():
            w.raw(private.private_bytes_raw()).var(opk.to_bytes())
        for table in (self.one_time_kem, self.last_resort):
            w.u32(len(table))
            for seed, kem in table.values():
                w.raw(seed).var(kem.to_bytes())
        w.u32(len(self.seen_base_keys))
        for spk_id, seen in self.seen_base_keys.items():
            w.u32(spk_id).u32(len(seen))
            for base_key in sorted(seen):
                w.raw(base_key)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes, *, verify: bool = True) -> PreKeys:
        """``verify=False`` for the device's own authenticated store: its records were
        signed here, and checking 200 signatures costs ~20 ms on every load."""
        r = Reader(data, "prekeys")
        if r.u8() != _SECRET_VERSION:
            raise UnsupportedVersion("prekeys: unknown version")
        keys = cls(IdentityPublicKey.from_bytes(r.var(256)))
        keys._next_id = r.u32()
        ident = keys.identity
        for _ in range(r.count(64)):
            private = p.x25519_private(r.raw(32))
            spk = SignedPreKeyPublic.from_bytes(r.var(256), ident, verify)
            keys.signed_prekeys[spk.key_id] = (private, spk)
        for _ in range(r.count(MAX_ONE_TIME)):
            private = p.x25519_private(r.raw(32))
            opk = OneTimePreKeyPublic.from_bytes(r.var(256))
            keys.one_time[opk.key_id] = (private, opk)
        for table in (keys.one_time_kem, keys.last_resort):
            for _ in range(r.count(MAX_ONE_TIME)):
                seed = r.raw(p.MLKEM768_SEED_LEN)
                kem = KemPreKeyPublic.from_bytes(r.var(4096), ident, verify)
                table[kem.key_id] = (seed, kem)
        for _ in range(r.count(64)):
            spk_id = r.u32()
            keys.seen_base_keys[spk_id] = {r.raw(32)
                                           for _ in range(r.count(2 * SEEN_BASE_KEYS_ROTATE))}
        r.done()
        for table, last_resort in ((keys.one_time_kem, False), (keys.last_resort, True)):
            if any(rec.last_resort != last_resort for _, rec in table.values()):
                raise MalformedMessage("prekeys: an ML-KEM key is in the wrong table")
        if not keys.signed_prekeys or not keys.last_resort:
            raise MalformedMessage("prekeys: no signed prekey or last-resort key")
        return keys
