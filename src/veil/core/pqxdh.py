"""PQXDH key agreement (Signal, "The PQXDH Key Agreement Protocol", revision 3).

Parameters (§2.1): curve X25519, hash SHA-256, pqkem ML-KEM-768,
info ``Veil_PQXDH_CURVE25519_SHA-256_ML-KEM-768``. Identity keys are X25519 keys
certified by the device's Ed25519 key (see :mod:`veil.core.keys`), in place of XEdDSA.

§3.3 (sending the initial message)::

    DH1 = DH(IKA, SPKB)   DH2 = DH(EKA, IKB)   DH3 = DH(EKA, SPKB)   [DH4 = DH(EKA, OPKB)]
    (CT, SS) = PQKEM-ENC(PQPKB)
    SK = KDF(DH1 || DH2 || DH3 [|| DH4] || SS)
    AD = EncodeEC(IKA) || EncodeEC(IKB)   (here also each side's Ed25519 key)
         || SHA-256(label || the whole initial header as sent)

where KDF is HKDF-SHA-256 with a zero salt and the input ``0xFF * 32 || KM`` (§2.2).
The transcript hash in AD is the "additional information" §3.3 allows and §4.12/§4.13
and the 2024 analyses (Bhargavan–Jacomme–Kiefer–Schmidt; Fiedler–Günther) advise: the
first message authenticates the version, flags, both identities, EK_A, every key id
and the KEM ciphertext, so none of them can be altered or re-spelled in a replay.
Every public key is parsed canonically and every flag as exactly 0 or 1.

This module computes SK and AD and parses/serialises the initial-message header; the
session layer feeds SK to the Double Ratchet and consumes one-time keys (§3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import x25519

from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import DuplicateMessage, UntrustedIdentity
from veil.core.keys import (
    IdentityKeyPair,
    IdentityPublicKey,
    PreKeyBundle,
    encode_ec,
)
from veil.core.prekeys import PreKeys

INFO = b"Veil_PQXDH_CURVE25519_SHA-256_ML-KEM-768"
_F = b"\xff" * 32
_SALT = bytes(32)
_TRANSCRIPT_LABEL = b"VeilPQXDHTranscript"


def derive_shared_key(dh_outputs: list[bytes], kem_secret: bytes) -> bytes:
    """SK = KDF(DH1 || DH2 || DH3 [|| DH4] || SS) per §2.2 and §3.3."""
    return p.hkdf(_F + b"".join(dh_outputs) + kem_secret, _SALT, INFO, 32)


def transcript_hash(transcript: bytes) -> bytes:
    """SHA-256 of the initial header exactly as sent (version and flags included)."""
    return p.sha256(_TRANSCRIPT_LABEL + transcript)


def associated_data(initiator: IdentityPublicKey, responder: IdentityPublicKey,
                    transcript_digest: bytes) -> bytes:
    """AD binds both identities (their X25519 ``EncodeEC`` and Ed25519 keys) and the
    initial header's transcript hash."""
    return (encode_ec(initiator.dh) + initiator.signing
            + encode_ec(responder.dh) + responder.signing + transcript_digest)


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """What the initiator tells the responder besides the first ciphertext (§3.3)."""

    identity: IdentityPublicKey
    base_key: bytes                  # EKA
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_last_resort: bool
    kem_ciphertext: bytes

    def write(self, w: Writer) -> None:
        w.var(self.identity.to_bytes()).raw(self.base_key).u32(self.signed_prekey_id)
        if self.one_time_prekey_id is None:
            w.u8(0)
        else:
            w.u8(1).u32(self.one_time_prekey_id)
        w.u32(self.kem_prekey_id).u8(int(self.kem_last_resort)).raw(self.kem_ciphertext)

    @classmethod
    def read(cls, r: Reader) -> InitialHeader:
        # Unverified here: ``session.respond`` compares it with the identity the caller
        # already verified, or checks its binding itself, before any key is used.
        identity = IdentityPublicKey.parse(r.var(IdentityPublicKey.SIZE), verify=False)
        base_key = p.check_x25519_canonical(r.raw(32))
        spk_id = r.u32()
        opk_id = r.u32() if r.flag() else None
        kem_id = r.u32()
        last_resort = r.flag()
        ciphertext = r.raw(p.MLKEM768_CIPHERTEXT_LEN)
        return cls(identity, base_key, spk_id, opk_id, kem_id, last_resort, ciphertext)


@dataclass(frozen=True, slots=True)
class Agreement:
    """The outcome of PQXDH on either side (the session layer adds the AD, which
    covers the header as it is framed on the wire)."""

    shared_key: bytes
    header: InitialHeader
    remote_identity: IdentityPublicKey
    remote_ratchet_key: bytes | None             # initiator: the responder's SPK
    local_ratchet_key: x25519.X25519PrivateKey | None  # responder: its SPK private key


def initiate(identity: IdentityKeyPair, bundle: PreKeyBundle, *,
             own_device: bool = False) -> Agreement:
    """Alice's side (§3.3). The bundle's signatures were checked when it was loaded.

    A bundle with our own identity key is refused, unless ``own_device``: the caller
    says it is another device of this account, which shares the identity
    (docs/devices.md); such a session is authenticated by holding that identity."""
    if bundle.identity == identity.public and not own_device:
        raise UntrustedIdentity("refusing to start a session with our own identity key")
    ephemeral = p.x25519_generate()
    spk = p.x25519_public(bundle.signed_prekey.public)
    outputs = [identity.dh(spk), p.dh(ephemeral, bundle.identity.dh_key), p.dh(ephemeral, spk)]
    opk_id = None
    if bundle.one_time_prekey is not None:
        outputs.append(p.dh(ephemeral, p.x25519_public(bundle.one_time_prekey.public)))
        opk_id = bundle.one_time_prekey.key_id
    kem = bundle.one_time_kem_prekey or bundle.last_resort_kem
    kem_secret, kem_ciphertext = p.mlkem_encapsulate(p.mlkem_public(kem.public))
    header = InitialHeader(identity.public, ephemeral.public_key().public_bytes_raw(),
                           bundle.signed_prekey.key_id, opk_id, kem.key_id, kem.last_resort,
                           kem_ciphertext)
    return Agreement(derive_shared_key(outputs, kem_secret), header,
                     bundle.identity, bundle.signed_prekey.public, None)


def respond(identity: IdentityKeyPair, prekeys: PreKeys, header: InitialHeader) -> Agreement:
    """Bob's side (§3.4). Pure: the caller consumes the one-time keys after decrypting."""
    if prekeys.base_key_seen(header.signed_prekey_id, header.base_key):
        raise DuplicateMessage("initial message was already accepted (replay)")
    if header.one_time_prekey_id is None and header.kem_last_resort:
        prekeys.check_replay_capacity(header.signed_prekey_id)
    spk_private = prekeys.signed_prekey_private(header.signed_prekey_id)
    kem_private = prekeys.kem_private(header.kem_prekey_id, header.kem_last_resort)
    base = p.x25519_public(header.base_key)
    outputs = [p.dh(spk_private, header.identity.dh_key), identity.dh(base),
               p.dh(spk_private, base)]
    if header.one_time_prekey_id is not None:
        outputs.append(p.dh(prekeys.one_time_private(header.one_time_prekey_id), base))
    kem_secret = p.mlkem_decapsulate(kem_private, header.kem_ciphertext)
    return Agreement(derive_shared_key(outputs, kem_secret), header,
                     header.identity, None, spk_private)

__all__ = [
    "InitialHeader",
    "associated_data",
    "derive_shared_key",
    "initiate",
    "respond",
    "transcript_hash",
]
