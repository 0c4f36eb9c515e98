"""MLS cipher suites and their labelled operations (RFC 9420 §5, §17.1; RFC 9180 §7.1.3).

Every primitive comes from ``cryptography``: hashes, HMAC (which is HKDF-Extract),
HKDF-Expand, AEADs, signatures and HPKE base mode. Built on them here are only the MLS
labelled constructions and HPKE ``DeriveKeyPair``.
"""

from __future__ import annotations

import hmac as _hmac
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veil.core.mls.codec import Writer
from veil.core.mls.errors import (
    MlsDecryptionError,
    MlsSignatureError,
    UnsupportedCipherSuite,
)

LABEL_PREFIX = b"MLS 1.0 "

# Group orders of the NIST curves, needed by DeriveKeyPair's rejection sampling.
_ORDERS = {
    "P256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "P384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "P521": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


@dataclass(frozen=True, slots=True)
class _Params:
    kem: str  # "X25519" | "P256" | "P384" | "P521"
    kem_id: int
    aead: str  # "AES128GCM" | "AES256GCM" | "CHACHA20"
    hash_name: str  # "SHA256" | "SHA384" | "SHA512"
    sig: str  # "Ed25519" | "P256" | "P384" | "P521"


_SUITES: dict[int, _Params] = {
    1: _Params("X25519", 0x0020, "AES128GCM", "SHA256", "Ed25519"),
    2: _Params("P256", 0x0010, "AES128GCM", "SHA256", "P256"),
    3: _Params("X25519", 0x0020, "CHACHA20", "SHA256", "Ed25519"),
    5: _Params("P521", 0x0012, "AES256GCM", "SHA512", "P521"),
    7: _Params("P384", 0x0011, "AES256GCM", "SHA384", "P384"),
}

SUPPORTED_SUITES: tuple[int, ...] = tuple(sorted(_SUITES))

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
_DIGEST_SIZES = {"SHA256": 32, "SHA384": 48, "SHA512": 64}
_KEM_HASH = {"X25519": "SHA256", "P256": "SHA256", "P384": "SHA384", "P521": "SHA512"}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P256": ec.SECP256R1,
    "P384": ec.SECP384R1,
    "P521": ec.SECP521R1,
}
_NSK = {"X25519": 32, "P256": 32, "P384": 48, "P521": 66}
_BITMASK = {"P256": 0xFF, "P384": 0xFF, "P521": 0x01}


def _hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hash_name.lower()).digest()


class HpkeKeyPair:
    """An HPKE key pair serialised per RFC 9180 (``SerializePrivateKey``/``SerializePublicKey``)."""

    __slots__ = ("private", "public")

    def __init__(self, private: bytes, public: bytes) -> None:
        self.private = private
        self.public = public


class CipherSuite:
    """One MLS cipher suite: hash, KDF, AEAD, HPKE and signature scheme."""

    def __init__(self, suite_id: int) -> None:
        params = _SUITES.get(suite_id)
        if params is None:
            raise UnsupportedCipherSuite(f"cipher suite {suite_id} is not supported")
        self.suite_id = suite_id
        self._p = params
        self.hash_name = params.hash_name
        self._hash_cls = _HASHES[params.hash_name]
        self.nh: int = _DIGEST_SIZES[params.hash_name]
        self.nk = 16 if params.aead == "AES128GCM" else 32
        self.nn = 12
        self._hpke = hpke.Suite(
            getattr(hpke.KEM, params.kem),
            getattr(hpke.KDF, "HKDF_" + params.hash_name),
            {"AES128GCM": hpke.AEAD.AES_128_GCM, "AES256GCM": hpke.AEAD.AES_256_GCM,
             "CHACHA20": hpke.AEAD.CHACHA20_POLY1305}[params.aead],
        )
        self._kem_suite_id = b"KEM" + params.kem_id.to_bytes(2, "big")
        self._nenc = self._enc_len()

    # -- hash, MAC, KDF -------------------------------------------------------------

    def hash(self, data: bytes) -> bytes:
        h = hashes.Hash(self._hash_cls())
        h.update(data)
        return h.finalize()

    def mac(self, key: bytes, data: bytes) -> bytes:
        m = c_hmac.HMAC(key, self._hash_cls())
        m.update(data)
        return m.finalize()

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> bool:
        return _hmac.compare_digest(self.mac(key, data), tag)

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        """HKDF-Extract, which RFC 5869 defines as HMAC(salt, ikm)."""
        if not salt:
            salt = bytes(self.nh)
        return self.mac(salt, ikm)

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return HKDFExpand(self._hash_cls(), length, info).derive(prk)

    def expand_with_label(self, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        w = Writer()
        w.u16(length)
        w.opaque(LABEL_PREFIX + label)
        w.opaque(context)
        return self.expand(secret, w.bytes(), length)

    def derive_secret(self, secret: bytes, label: bytes) -> bytes:
        return self.expand_with_label(secret, label, b"", self.nh)

    def derive_tree_secret(
        self, secret: bytes, label: bytes, generation: int, length: int
    ) -> bytes:
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    def ref_hash(self, label: bytes, value: bytes) -> bytes:
        w = Writer()
        w.opaque(label)
        w.opaque(value)
        return self.hash(w.bytes())

    # -- AEAD -----------------------------------------------------------------------

    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self._p.aead == "CHACHA20":
            return ChaCha20Poly1305(key)
        return AESGCM(key)

    def seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        try:
            return self._aead(key).decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise MlsDecryptionError("AEAD ciphertext did not authenticate") from None

    # -- HPKE -----------------------------------------------------------------------

    def _labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        kem_hash = _KEM_HASH[self._p.kem]
        key = salt if salt else bytes(_DIGEST_SIZES[kem_hash])
        return _hmac_digest(kem_hash, key, b"HPKE-v1" + self._kem_suite_id + label + ikm)

    def _labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + b"HPKE-v1" + self._kem_suite_id + label + info
        return HKDFExpand(_HASHES[_KEM_HASH[self._p.kem]](), length, labeled).derive(prk)

    def derive_key_pair(self, ikm: bytes) -> HpkeKeyPair:
        """RFC 9180 §7.1.3 ``DeriveKeyPair`` for the suite's KEM (never cached: the
        private keys it yields must die with the path secrets they come from)."""
        kem = self._p.kem
        dkp_prk = self._labeled_extract(b"", b"dkp_prk", ikm)
        if kem == "X25519":
            sk = self._labeled_expand(dkp_prk, b"sk", b"", 32)
            return HpkeKeyPair(sk, self.hpke_public_from_private(sk))
        order = _ORDERS[kem]
        nsk = _NSK[kem]
        for counter in range(256):
            candidate = bytearray(
                self._labeled_expand(dkp_prk, b"candidate", bytes((counter,)), nsk)
            )
            candidate[0] &= _BITMASK[kem]
            value = int.from_bytes(candidate, "big")
            if 0 < value < order:
                sk = bytes(candidate)
                return HpkeKeyPair(sk, self.hpke_public_from_private(sk))
        raise MlsDecryptionError("DeriveKeyPair found no valid scalar")

    def generate_hpke_key_pair(self) -> HpkeKeyPair:
        return self.derive_key_pair(os.urandom(self.nh))

    def _hpke_private(self, sk: bytes) -> x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey:
        kem = self._p.kem
        try:
            if kem == "X25519":
                return x25519.X25519PrivateKey.from_private_bytes(sk)
            return ec.derive_private_key(int.from_bytes(sk, "big"), _CURVES[kem]())
        except ValueError:
            raise MlsDecryptionError("invalid HPKE private key") from None

    def _hpke_public(self, pk: bytes) -> x25519.X25519PublicKey | ec.EllipticCurvePublicKey:
        kem = self._p.kem
        try:
            if kem == "X25519":
                return x25519.X25519PublicKey.from_public_bytes(pk)
            return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[kem](), pk)
        except ValueError:
            raise MlsDecryptionError("invalid HPKE public key") from None

    def hpke_public_from_private(self, sk: bytes) -> bytes:
        key = self._hpke_private(sk)
        if isinstance(key, x25519.X25519PrivateKey):
            return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def _enc_len(self) -> int:
        return {"X25519": 32, "P256": 65, "P384": 97, "P521": 133}[self._p.kem]

    def hpke_info(self, label: bytes, context: bytes) -> bytes:
        """The HPKE ``info`` of ``EncryptWithLabel``: encoded once per context, not per
        recipient (an UpdatePath context is the whole GroupContext, a Welcome's the
        whole encrypted GroupInfo)."""
        info = Writer()
        info.opaque(LABEL_PREFIX + label)
        info.opaque(context)
        return info.bytes()

    def seal_with_info(
        self, public_key: bytes, info: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """One HPKE base-mode seal under a precomputed ``info``: (kem_output, ciphertext)."""
        out = self._hpke.encrypt(plaintext, self._hpke_public(public_key), info=info)
        n = self._nenc
        return out[:n], out[n:]

    def encrypt_with_label(
        self, public_key: bytes, label: bytes, context: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """``EncryptWithLabel`` (RFC 9420 §5.1.3): returns (kem_output, ciphertext)."""
        return self.seal_with_info(public_key, self.hpke_info(label, context), plaintext)

    def decrypt_with_label(
        self, private_key: bytes, label: bytes, context: bytes, kem_output: bytes,
        ciphertext: bytes,
    ) -> bytes:
        if len(kem_output) != self._nenc:
            raise MlsDecryptionError("HPKE kem_output has the wrong length")
        sk = self._hpke_private(private_key)
        try:
            return self._hpke.decrypt(
                kem_output + ciphertext, sk, info=self.hpke_info(label, context)
            )
        except (InvalidTag, ValueError):
            raise MlsDecryptionError("HPKE ciphertext did not authenticate") from None

    # -- HPKE secret export (RFC 9180 §5.3), for ExternalInit -------------------------
    # ``cryptography``'s HPKE exposes single-shot seal/open only, so the export-only
    # context MLS needs is assembled from its DH, HKDF and hash primitives.

    def _hpke_suite_id(self) -> bytes:
        kdf_id = {"SHA256": 1, "SHA384": 2, "SHA512": 3}[self.hash_name]
        aead_id = {"AES128GCM": 1, "AES256GCM": 2, "CHACHA20": 3}[self._p.aead]
        return (b"HPKE" + self._p.kem_id.to_bytes(2, "big") + kdf_id.to_bytes(2, "big")
                + aead_id.to_bytes(2, "big"))

    def _hpke_labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return self.extract(salt, b"HPKE-v1" + self._hpke_suite_id() + label + ikm)

    def _hpke_labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + b"HPKE-v1" + self._hpke_suite_id() + label + info
        return self.expand(prk, labeled, length)

    def _dh(self, private_key: bytes, public_key: bytes) -> bytes:
        sk = self._hpke_private(private_key)
        pk = self._hpke_public(public_key)
        try:
            if isinstance(sk, x25519.X25519PrivateKey) and isinstance(pk, x25519.X25519PublicKey):
                return sk.exchange(pk)
            if isinstance(sk, ec.EllipticCurvePrivateKey) and isinstance(
                pk, ec.EllipticCurvePublicKey
            ):
                return sk.exchange(ec.ECDH(), pk)
        except ValueError:
            raise MlsDecryptionError("HPKE key agreement failed") from None
        raise MlsDecryptionError("HPKE key types do not match")

    def _shared_secret(self, dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
        nsecret = {"X25519": 32, "P256": 32, "P384": 48, "P521": 64}[self._p.kem]
        eae_prk = self._labeled_extract(b"", b"eae_prk", dh)
        return self._labeled_expand(eae_prk, b"shared_secret", enc + pk_r, nsecret)

    def _export(self, shared_secret: bytes, info: bytes, context: bytes, length: int) -> bytes:
        psk_id_hash = self._hpke_labeled_extract(b"", b"psk_id_hash", b"")
        info_hash = self._hpke_labeled_extract(b"", b"info_hash", info)
        ks_context = b"\x00" + psk_id_hash + info_hash
        secret = self._hpke_labeled_extract(shared_secret, b"secret", b"")
        exporter = self._hpke_labeled_expand(secret, b"exp", ks_context, self.nh)
        return self._hpke_labeled_expand(exporter, b"sec", context, length)

    def hpke_export_encap(
        self, public_key: bytes, info: bytes, context: bytes, length: int
    ) -> tuple[bytes, bytes]:
        """SetupBaseS(pkR, info) then Export(context, length): returns (enc, secret)."""
        eph = self.generate_hpke_key_pair()
        dh = self._dh(eph.private, public_key)
        shared = self._shared_secret(dh, eph.public, public_key)
        return eph.public, self._export(shared, info, context, length)

    def hpke_export_decap(
        self, private_key: bytes, enc: bytes, info: bytes, context: bytes, length: int
    ) -> bytes:
        """SetupBaseR(enc, skR, info) then Export(context, length)."""
        if len(enc) != self._enc_len():
            raise MlsDecryptionError("HPKE enc has the wrong length")
        dh = self._dh(private_key, enc)
        shared = self._shared_secret(dh, enc, self.hpke_public_from_private(private_key))
        return self._export(shared, info, context, length)

    def _hpke_seal_manual(
        self, public_key: bytes, info: bytes, plaintext: bytes
    ) -> bytes:
        """Single-shot seal through this module's key schedule (cross-checks ``_export``'s
        inputs against ``cryptography``'s HPKE in the tests)."""
        eph = self.generate_hpke_key_pair()
        shared = self._shared_secret(self._dh(eph.private, public_key), eph.public, public_key)
        psk_id_hash = self._hpke_labeled_extract(b"", b"psk_id_hash", b"")
        info_hash = self._hpke_labeled_extract(b"", b"info_hash", info)
        ks_context = b"\x00" + psk_id_hash + info_hash
        secret = self._hpke_labeled_extract(shared, b"secret", b"")
        key = self._hpke_labeled_expand(secret, b"key", ks_context, self.nk)
        nonce = self._hpke_labeled_expand(secret, b"base_nonce", ks_context, self.nn)
        return eph.public + self.seal(key, nonce, b"", plaintext)

    # -- signatures -----------------------------------------------------------------

    def generate_signature_key_pair(self) -> tuple[bytes, bytes]:
        """A fresh (private, public) signature key pair in MLS encodings."""
        if self._p.sig == "Ed25519":
            sk = ed25519.Ed25519PrivateKey.generate()
            priv = sk.private_bytes_raw()
        else:
            ek = ec.generate_private_key(_CURVES[self._p.sig]())
            priv = ek.private_numbers().private_value.to_bytes(_NSK[self._p.sig], "big")
        return priv, self.signature_public_from_private(priv)

    def signature_public_from_private(self, priv: bytes) -> bytes:
        if self._p.sig == "Ed25519":
            return ed25519.Ed25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw
            )
        key = ec.derive_private_key(int.from_bytes(priv, "big"), _CURVES[self._p.sig]())
        return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def sign(self, priv: bytes, message: bytes) -> bytes:
        if self._p.sig == "Ed25519":
            return ed25519.Ed25519PrivateKey.from_private_bytes(priv).sign(message)
        key = ec.derive_private_key(int.from_bytes(priv, "big"), _CURVES[self._p.sig]())
        return key.sign(message, ec.ECDSA(self._hash_cls()))

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> bool:
        try:
            if self._p.sig == "Ed25519":
                _ed_public(pub).verify(signature, message)
            else:
                # Re-encode to reject non-canonical DER before verification.
                r, s = decode_dss_signature(signature)
                if encode_dss_signature(r, s) != signature:
                    return False
                _ec_public(self._p.sig, pub).verify(
                    signature, message, ec.ECDSA(self._hash_cls())
                )
        except (InvalidSignature, ValueError):
            return False
        return True

    def sign_with_label(self, priv: bytes, label: bytes, content: bytes) -> bytes:
        return self.sign(priv, _sign_content(label, content))

    def verify_with_label(
        self, pub: bytes, label: bytes, content: bytes, signature: bytes
    ) -> bool:
        return self.verify(pub, _sign_content(label, content), signature)

    def require_signature(
        self, pub: bytes, label: bytes, content: bytes, signature: bytes, what: str
    ) -> None:
        if not self.verify_with_label(pub, label, content, signature):
            raise MlsSignatureError(f"{what} signature does not verify")


def _sign_content(label: bytes, content: bytes) -> bytes:
    w = Writer()
    w.opaque(LABEL_PREFIX + label)
    w.opaque(content)
    return w.bytes()


@lru_cache(maxsize=4096)
def _ed_public(pub: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(pub)


@lru_cache(maxsize=4096)
def _ec_public(curve: str, pub: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve](), pub)


@lru_cache(maxsize=16)
def get_suite(suite_id: int) -> CipherSuite:
    """The shared :class:`CipherSuite` instance for ``suite_id``."""
    return CipherSuite(suite_id)


def is_supported(suite_id: int) -> bool:
    return suite_id in _SUITES

__all__ = [
    "SUPPORTED_SUITES",
    "CipherSuite",
    "get_suite",
    "is_supported",
]
