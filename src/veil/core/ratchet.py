"""The Double Ratchet (Signal, "The Double Ratchet Algorithm", revision 4).

§3 (the algorithm) with the recommended functions of §5.2: X25519 for the DH ratchet,
``KDF_RK`` = HKDF-SHA-256 salted with the root key, ``KDF_CK`` = HMAC-SHA-256 with the
constants 0x01 (message key) and 0x02 (next chain key). Each message key encrypts one
message with AES-256-GCM; the header is authenticated as associated data (§3.1). §4
(header encryption) is an option chosen when the session starts. Message keys are used
through :func:`veil.core.primitives.seal_message` (AES-256-GCM-SIV under a key and a
nonce that the chain step derives for each message: the misuse-resistant choice §5.2
recommends): a
rolled-back state that encrypts again under a used message key leaks only whether the
two plaintexts are equal.

Departures that do not change what goes over the wire:

- *Lazy sending step.* The spec's ``DHRatchet`` generates the new sending key pair and
  derives the sending chain when a new ratchet key arrives. Here the key pair is made
  then — so the old private key (for a responder, the signed prekey's) leaves the state
  as soon as the receiving chain is derived — but its DH and ``KDF_RK`` wait for the
  next ``encrypt``: a receiver that never answers saves a DH, and the keys and headers
  are the same.
- *Transactional decryption.* Every candidate state change (skipped keys, chain keys,
  root key) is computed into locals and committed only after the AEAD tag verifies, so
  a forged, tampered or replayed message leaves the state exactly as it was.
- *Bounded memory and lifetime.* At most ``MAX_SKIP`` keys are skipped per message and
  at most ``MAX_STORED_SKIPPED`` are kept (oldest evicted), as §3.2 and §8.4 advise.
  As §6.4 asks, a skipped key is also deleted once ``MAX_SKIPPED_STEPS`` newer
  receiving chains have started, or ``MAX_SKIPPED_AGE_MS`` after it was stored when
  the caller passes the time: a withheld message's key does not wait for a compromise.
- *Bounded counters.* A header whose counters would overflow 32 bits is refused as
  malformed before anything is derived.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import x25519

from veil.core import primitives as p
from veil.core.encoding import Reader, Writer
from veil.core.errors import (
    DecryptionFailed,
    DuplicateMessage,
    MalformedMessage,
    TooManySkippedMessages,
    UnsupportedVersion,
)

MAX_SKIP = 1000
MAX_STORED_SKIPPED = 2000
MAX_SKIPPED_STEPS = 8
MAX_SKIPPED_AGE_MS = 7 * 24 * 3600 * 1000
# Old receiving chains remembered only to tell a duplicate from a forgery.
MAX_PREVIOUS_CHAINS = 16
MAX_COUNTER = 0xFFFFFFFF

_HEADER = struct.Struct(">32sII")
HEADER_LEN = _HEADER.size                # 40: ratchet public key, PN, N
ENCRYPTED_HEADER_LEN = p.NONCE_LEN + HEADER_LEN + p.AEAD_TAG_LEN
_RK_INFO = b"VeilDoubleRatchetRoot"
_CK_MESSAGE = b"\x01"
_CK_CHAIN = b"\x02"
_CK_NONCE = b"\x03"
_NONCE_LEN = p.NONCE_LEN
_STATE_VERSION = 2


def kdf_rk(rk: bytes, dh_out: bytes, header_keys: bool) -> tuple[bytes, bytes, bytes | None]:
    """(root key, chain key, next header key or None) — §5.2 and §4.2 ``KDF_RK_HE``."""
    out = p.hkdf(dh_out, rk, _RK_INFO, 96 if header_keys else 64)
    return out[:32], out[32:64], (out[64:] if header_keys else None)


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """(message key, next chain key) — §5.2: HMAC-SHA-256 under the chain key with one
    constant byte per output. The message key is the AEAD key (0x01) followed by the
    first 12 bytes of a third output (0x03) as its nonce."""
    key, chain, nonce = p.hmac_sha256_triple(ck, _CK_MESSAGE, _CK_CHAIN, _CK_NONCE)
    return key + nonce[:_NONCE_LEN], chain


class RatchetState:
    """One side of a Double Ratchet session. Mutated only by committed operations."""

    __slots__ = (
        "ckr", "cks", "clock_ms", "dhr", "dhr_key", "dhs", "dhs_pub", "hkr", "hks", "nhkr",
        "nhks", "nr", "ns", "pn", "previous_chains", "rk", "rstep", "send_pending", "skipped",
        "use_he",
    )

    def __init__(self, rk: bytes, use_he: bool) -> None:
        self.rk = rk
        self.use_he = use_he
        self.dhs: x25519.X25519PrivateKey | None = None
        self.dhs_pub = b""
        self.dhr: bytes | None = None
        self.dhr_key: x25519.X25519PublicKey | None = None
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = self.nr = self.pn = 0
        self.send_pending = False
        self.hks: bytes | None = None
        self.hkr: bytes | None = None
        self.nhks: bytes | None = None
        self.nhkr: bytes | None = None
        # (chain id, n) -> (message key, receiving step, time stored); the chain id is the
        # ratchet key, or with header encryption the header key.
        self.skipped: OrderedDict[tuple[bytes, int], tuple[bytes, int, int]] = OrderedDict()
        self.rstep = 0               # receiving chains started so far
        self.clock_ms = 0            # the latest time a caller passed in
        self.previous_chains: OrderedDict[bytes, None] = OrderedDict()

    # initialisation (§3.3, §4.3) ------------------------------------------------------

    @classmethod
    def for_initiator(cls, sk: bytes, remote_ratchet_key: bytes, use_he: bool,
                      shared_hka: bytes | None = None,
                      shared_nhkb: bytes | None = None) -> RatchetState:
        """``RatchetInitAlice``: the sending ratchet step runs on the first encrypt."""
        state = cls(sk, use_he)
        state.dhr = remote_ratchet_key
        state.dhr_key = p.x25519_public(remote_ratchet_key)
        state.send_pending = True
        state.nhks = shared_hka     # becomes HKs at that first step, as the spec sets it
        state.nhkr = shared_nhkb
        return state

    @classmethod
    def for_responder(cls, sk: bytes, own_ratchet_key: x25519.X25519PrivateKey, use_he: bool,
                      shared_hka: bytes | None = None,
                      shared_nhkb: bytes | None = None) -> RatchetState:
        """``RatchetInitBob``: DHs is the signed prekey; nothing to send with yet."""
        state = cls(sk, use_he)
        state.dhs = own_ratchet_key
        state.dhs_pub = own_ratchet_key.public_key().public_bytes_raw()
        state.nhks = shared_nhkb
        state.nhkr = shared_hka
        return state

    # sending (§3.4 RatchetEncrypt, §4.3 RatchetEncryptHE) -----------------------------

    def _sending_step(self) -> None:
        assert self.dhr_key is not None
        if self.dhs is None:         # the initiator's first step; otherwise made on receipt
            self.dhs = p.x25519_generate()
            self.dhs_pub = self.dhs.public_key().public_bytes_raw()
        self.rk, self.cks, nhks = kdf_rk(self.rk, p.dh(self.dhs, self.dhr_key), self.use_he)
        self.pn, self.ns = self.ns, 0
        if self.use_he:
            self.hks, self.nhks = self.nhks, nhks
        self.send_pending = False

    def encrypt(self, plaintext: bytes, ad: bytes) -> tuple[bytes, bytes]:
        """Returns (header bytes as sent, ciphertext)."""
        if self.send_pending:
            self._sending_step()
        if self.cks is None:
            raise MalformedMessage("session cannot send before it has received")
        if self.ns >= MAX_COUNTER:
            raise TooManySkippedMessages("sending chain exhausted; the peer must reply first")
        mk, self.cks = kdf_ck(self.cks)
        header = _HEADER.pack(self.dhs_pub, self.pn, self.ns)
        self.ns += 1
        if self.use_he:
            assert self.hks is not None
            header = p.seal_random_nonce(self.hks, header, ad)
        return header, p.seal_message(mk, plaintext, ad + header)

    # receiving (§3.5 RatchetDecrypt, §4.3 RatchetDecryptHE) ---------------------------

    def decrypt(self, header: bytes, ciphertext: bytes, ad: bytes,
                finish: Callable[[bytes], bytes] = bytes, now_ms: int | None = None) -> bytes:
        """Decrypt; ``finish`` (e.g. unpadding) runs on the plaintext before the commit,
        so its failure too leaves the state unchanged. With ``now_ms``, skipped keys
        older than ``MAX_SKIPPED_AGE_MS`` are deleted first."""
        if now_ms is not None:
            self.expire_skipped(now_ms)
        body_ad = ad + header
        if self.use_he:
            return self._decrypt_he(header, ciphertext, ad, body_ad, finish)
        if len(header) != HEADER_LEN:
            raise MalformedMessage("ratchet header has the wrong length")
        dh_pub, pn, n = _unpack(header)
        entry = self.skipped.get((dh_pub, n)) if self.skipped else None
        if entry is not None:
            plaintext = finish(p.open_message(entry[0], ciphertext, body_ad))
            del self.skipped[(dh_pub, n)]
            return plaintext
        if dh_pub == self.dhr and self.ckr is not None:
            return self._decrypt_in_chain(dh_pub, n, ciphertext, body_ad, finish)
        if dh_pub in self.previous_chains or (dh_pub == self.dhr and self.ckr is None
                                              and self.cks is not None):
            raise DuplicateMessage("message was already received or its key has expired")
        return self._decrypt_new_chain(dh_pub, p.x25519_public(dh_pub), None, pn, n,
                                       ciphertext, body_ad, finish)

    def _decrypt_in_chain(self, chain_id: bytes, n: int, ciphertext: bytes,
                          body_ad: bytes, finish: Callable[[bytes], bytes]) -> bytes:
        assert self.ckr is not None
        if n < self.nr:
            raise DuplicateMessage("message was already received or its key has expired")
        if n == self.nr:             # the common case: the next message, nothing skipped
            mk, ck = kdf_ck(self.ckr)
            plaintext = finish(p.open_message(mk, ciphertext, body_ad))
            self.ckr, self.nr = ck, n + 1
            return plaintext
        new_skipped, ck = _skip(chain_id, self.ckr, self.nr, n)
        mk, ck = kdf_ck(ck)
        plaintext = finish(p.open_message(mk, ciphertext, body_ad))
        self.ckr, self.nr = ck, n + 1
        self._store_skipped(new_skipped)
        return plaintext

    def _decrypt_new_chain(self, dh_pub: bytes, dh_key: x25519.X25519PublicKey,
                           header_key: bytes | None, pn: int, n: int, ciphertext: bytes,
                           body_ad: bytes, finish: Callable[[bytes], bytes]) -> bytes:
        """A new ratchet public key: finish the old chain up to PN, then step (§3.5)."""
        if self.dhs is None:
            raise MalformedMessage("session has no ratchet key to answer with")
        old_id = self.hkr if self.use_he else self.dhr
        new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
        if self.ckr is not None and old_id is not None:
            new_skipped, _ = _skip(old_id, self.ckr, self.nr, pn)
        rk, ckr, nhkr = kdf_rk(self.rk, p.dh(self.dhs, dh_key), self.use_he)
        chain_id = header_key if self.use_he else dh_pub
        assert chain_id is not None
        more, ck = _skip(chain_id, ckr, 0, n)
        mk, ck = kdf_ck(ck)
        plaintext = finish(p.open_message(mk, ciphertext, body_ad))
        # Authenticated: commit the whole step.
        if old_id is not None and self.ckr is not None:
            self.previous_chains[old_id] = None
            while len(self.previous_chains) > MAX_PREVIOUS_CHAINS:
                self.previous_chains.popitem(last=False)
        self.rk, self.ckr, self.nr = rk, ck, n + 1
        self.dhr, self.dhr_key = dh_pub, dh_key
        if self.use_he:
            self.hkr, self.nhkr = self.nhkr, nhkr
        # The next sending key pair now, so the old private key (the signed prekey's, in
        # a fresh responder session) is gone from the state from here on.
        self.dhs = p.x25519_generate()
        self.dhs_pub = self.dhs.public_key().public_bytes_raw()
        self.send_pending = True
        self.rstep += 1
        self._store_skipped(new_skipped + more)
        return plaintext

    def _decrypt_he(self, enc_header: bytes, ciphertext: bytes, ad: bytes,
                    body_ad: bytes, finish: Callable[[bytes], bytes]) -> bytes:
        if len(enc_header) != ENCRYPTED_HEADER_LEN:
            raise MalformedMessage("encrypted ratchet header has the wrong length")
        # TrySkippedMessageKeysHE: one attempt per distinct header key with stored keys.
        for hk in dict.fromkeys(chain for chain, _ in self.skipped):
            header = _try_header(hk, enc_header, ad)
            if header is not None:
                _, _, n = _unpack(header)
                entry = self.skipped.get((hk, n))
                if entry is None and hk == self.hkr:
                    return self._decrypt_in_chain(hk, n, ciphertext, body_ad, finish)
                if entry is None:
                    raise DuplicateMessage("message was already received or its key expired")
                plaintext = finish(p.open_message(entry[0], ciphertext, body_ad))
                del self.skipped[(hk, n)]
                return plaintext
        if self.hkr is not None:
            header = _try_header(self.hkr, enc_header, ad)
            if header is not None:
                _, _, n = _unpack(header)
                return self._decrypt_in_chain(self.hkr, n, ciphertext, body_ad, finish)
        if self.nhkr is not None:
            header = _try_header(self.nhkr, enc_header, ad)
            if header is not None:
                dh_pub, pn, n = _unpack(header)
                return self._decrypt_new_chain(dh_pub, p.x25519_public(dh_pub), self.nhkr,
                                               pn, n, ciphertext, body_ad, finish)
        for hk in self.previous_chains:
            if _try_header(hk, enc_header, ad) is not None:
                raise DuplicateMessage("message was already received or its key has expired")
        raise DecryptionFailed("message header does not decrypt under any session key")

    def _store_skipped(self, entries: list[tuple[tuple[bytes, int], bytes]]) -> None:
        for key, mk in entries:
            self.skipped[key] = (mk, self.rstep, self.clock_ms)
        while self.skipped:     # stored in step order: the stale ones are at the front
            oldest = next(iter(self.skipped.values()))
            if (len(self.skipped) <= MAX_STORED_SKIPPED
                    and self.rstep - oldest[1] < MAX_SKIPPED_STEPS):
                break
            self.skipped.popitem(last=False)

    def expire_skipped(self, now_ms: int) -> None:
        """Delete skipped keys stored more than ``MAX_SKIPPED_AGE_MS`` before ``now_ms``
        (§6.4); a clock that jumps back only delays this."""
        self.clock_ms = max(self.clock_ms, now_ms)
        stale = [key for key, (_, _, stored) in self.skipped.items()
                 if self.clock_ms - stored > MAX_SKIPPED_AGE_MS]
        for key in stale:
            del self.skipped[key]

    # persistence --------------------------------------------------------------------

    def write(self, w: Writer) -> None:
        w.u8(_STATE_VERSION).u8(int(self.use_he)).u8(int(self.send_pending)).raw(self.rk)
        w.optional(self.dhs.private_bytes_raw() if self.dhs else None)
        w.optional(self.dhr).optional(self.cks).optional(self.ckr)
        w.u32(self.ns).u32(self.nr).u32(self.pn).u64(self.rstep).u64(self.clock_ms)
        for key in (self.hks, self.hkr, self.nhks, self.nhkr):
            w.optional(key)
        w.u32(len(self.skipped))
        for (chain, n), (mk, step, stored) in self.skipped.items():
            w.raw(chain).u32(n).raw(mk).u64(step).u64(stored)
        w.u32(len(self.previous_chains))
        for chain in self.previous_chains:
            w.raw(chain)

    @classmethod
    def read(cls, r: Reader) -> RatchetState:
        if r.u8() != _STATE_VERSION:
            raise UnsupportedVersion("ratchet state: unknown version")
        use_he, pending = r.flag(), r.flag()
        state = cls(r.raw(32), use_he)
        state.send_pending = pending
        dhs = r.optional_exact(32)
        if dhs is not None:
            state.dhs = p.x25519_private(dhs)
            state.dhs_pub = state.dhs.public_key().public_bytes_raw()
        state.dhr = r.optional_exact(32)
        if state.dhr is not None:
            state.dhr_key = p.x25519_public(state.dhr)
        state.cks, state.ckr = r.optional_exact(32), r.optional_exact(32)
        state.ns, state.nr, state.pn = r.u32(), r.u32(), r.u32()
        state.rstep, state.clock_ms = r.u64(), r.u64()
        state.hks, state.hkr, state.nhks, state.nhkr = (
            r.optional_exact(32), r.optional_exact(32), r.optional_exact(32),
            r.optional_exact(32))
        for _ in range(r.count(MAX_STORED_SKIPPED)):
            chain, n, mk = r.raw(32), r.u32(), r.raw(p.MESSAGE_KEY_LEN)
            state.skipped[(chain, n)] = (mk, r.u64(), r.u64())
        for _ in range(r.count(MAX_PREVIOUS_CHAINS)):
            state.previous_chains[r.raw(32)] = None
        state._check()
        return state

    def _check(self) -> None:
        """Stored state must be one the algorithm can reach; else later calls would fail
        with something other than a Veil error."""
        ok = not (self.send_pending and self.dhr is None)
        ok = ok and not (self.cks is not None and self.dhs is None)
        ok = ok and not (self.ckr is not None and self.dhr is None)
        if self.use_he:
            ok = ok and not (self.cks is not None and self.hks is None)
            ok = ok and not (self.send_pending and self.nhks is None)
            ok = ok and not (self.ckr is not None and self.hkr is None)
        elif any(k is not None for k in (self.hks, self.hkr, self.nhks, self.nhkr)):
            ok = False
        if not ok:
            raise MalformedMessage("ratchet state is inconsistent")


def _unpack(header: bytes) -> tuple[bytes, int, int]:
    """(ratchet key, PN, N) of a plaintext header; N + 1 must still fit 32 bits."""
    dh_pub, pn, n = _HEADER.unpack(header)
    if n >= MAX_COUNTER or pn >= MAX_COUNTER:
        raise MalformedMessage("ratchet header counter is out of range")
    return dh_pub, pn, n


def _skip(chain_id: bytes, ck: bytes, start: int, until: int) -> tuple[
        list[tuple[tuple[bytes, int], bytes]], bytes]:
    """Message keys for counters ``start .. until-1`` and the chain key after them (§3.5)."""
    if until - start > MAX_SKIP:
        raise TooManySkippedMessages(
            f"message skips {until - start} keys; at most {MAX_SKIP} are allowed")
    keys: list[tuple[tuple[bytes, int], bytes]] = []
    for i in range(start, until):
        mk, ck = kdf_ck(ck)
        keys.append(((chain_id, i), mk))
    return keys, ck


def _try_header(hk: bytes, enc_header: bytes, ad: bytes) -> bytes | None:
    try:
        return p.open_random_nonce(hk, enc_header, ad)
    except DecryptionFailed:
        return None

__all__ = [
    "ENCRYPTED_HEADER_LEN",
    "HEADER_LEN",
    "MAX_COUNTER",
    "MAX_SKIP",
    "MAX_SKIPPED_AGE_MS",
    "MAX_SKIPPED_STEPS",
    "MAX_STORED_SKIPPED",
    "RatchetState",
    "kdf_ck",
]
