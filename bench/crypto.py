"""Benchmark of the 1:1 cryptographic core against reference implementations.

Prints one JSON line per workload with the median rate over several rounds for Veil
and, in the same run, for the references: ``vodozemac`` (Rust Olm via its Python
bindings) and ``doubleratchet`` (pure-Python Double Ratchet with the recommended
primitives). Workloads:

- ``ratchet_one_way``: 256-byte messages, one sender encrypts, the other decrypts;
- ``ratchet_ping_pong``: the direction changes with every message (a DH step each time);
- ``session_setup``: PQXDH initiate + respond (vodozemac: Olm's classical 3DH, for scale);
- ``sealed_sender``: seal + open one 256-byte envelope (vodozemac: PkEncryption
  encrypt + decrypt, an unauthenticated ECIES, for scale);
- ``message_aead``: the per-message AEAD alone, seal + open of a padded 256-byte message:
  today's AES-256-GCM-SIV under a derived key and nonce against the AES-256-GCM with a
  fixed nonce that it replaced (issue 8), so the price of misuse resistance is measured
  in the same run.

Usage: ``python bench/crypto.py [--quick] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from veil.core import keys, prekeys, sealed, session

PAYLOAD = b"\xa5" * 256


def _interleaved(runs: dict[str, Callable[[], int]], rounds: int) -> dict[str, tuple[float,
                                                                                    float]]:
    """Median ops/s and µs/op per implementation; rounds alternate between them so that
    load from other processes on a shared machine hits every implementation alike.
    A run returns the operations it did; one that must prepare untimed state first
    records its own timed span in ``_timed``."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            _timed.clear()
            start = time.perf_counter()
            ops = run()
            elapsed = _timed[-1] if _timed else time.perf_counter() - start
            rates[name].append(ops / elapsed)
    return {name: (statistics.median(r), 1e6 / statistics.median(r)) for name, r in rates.items()}


_timed: list[float] = []


# --- Veil ---------------------------------------------------------------------------

def _veil_pair() -> tuple[session.Session, session.Session]:
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    pre = prekeys.PreKeys.generate(bob, one_time=1, now_ms=0)
    a, first = session.initiate(alice, pre.bundle(), b"hi")
    b, _ = session.respond(bob, pre, first)
    a.decrypt(b.encrypt(b"ack"))
    return a, b


def veil_one_way(n: int) -> Callable[[], int]:
    a, b = _veil_pair()

    def run() -> int:
        for _ in range(n):
            b.decrypt(a.encrypt(PAYLOAD))
        return n
    return run


def veil_ping_pong(n: int) -> Callable[[], int]:
    a, b = _veil_pair()

    def run() -> int:
        for _ in range(n // 2):
            b.decrypt(a.encrypt(PAYLOAD))
            a.decrypt(b.encrypt(PAYLOAD))
        return n // 2 * 2
    return run


def veil_setup(n: int) -> Callable[[], int]:
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    pre = prekeys.PreKeys.generate(bob, one_time=0, now_ms=0)
    bundle = pre.bundle()

    def run() -> int:
        # Fresh one-time keys each round, made before the timed span starts.
        if len(pre.one_time) < n:
            pre.add_one_time(bob, n - len(pre.one_time))
        bundles = [keys.PreKeyBundle(bundle.identity, bundle.signed_prekey,
                                     bundle.last_resort_kem, prekeys.decode_one_time(ec)[1],
                                     prekeys.decode_kem(kem, bob.public)[1])
                   for ec, kem in zip(list(pre.one_time.values())[:n],
                                      list(pre.one_time_kem.values())[:n], strict=True)]
        start = time.perf_counter()
        for b in bundles:
            _, first = session.initiate(alice, b, PAYLOAD)
            # As in the client: the sealed-sender certificate already vouched for Alice.
            session.respond(bob, pre, first, expected_identity=alice.public)
        _timed.append(time.perf_counter() - start)
        return n
    return run



def veil_sealed(n: int) -> Callable[[], int]:
    root = sealed.TrustRoot.generate()
    server = sealed.ServerKey.generate(root, 1, 2**62)
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    cert = server.issue(bytes(16), 1, alice.public, 2**62)

    def run() -> int:
        for _ in range(n):
            sealed.open_envelope(bob, sealed.seal(alice, cert, bob.public, PAYLOAD),
                                 root.public, 0)
        return n
    return run


def veil_message_aead(n: int) -> Callable[[], int]:
    from veil.core import padding
    from veil.core import primitives as p
    keys_ = [p.random_bytes(p.MESSAGE_KEY_LEN) for _ in range(n)]
    body, ad = padding.pad(PAYLOAD), b"\xad" * 200

    def run() -> int:
        for mk in keys_:
            p.open_message(mk, p.seal_message(mk, body, ad), ad)
        return n
    return run


def previous_message_aead(n: int) -> Callable[[], int]:
    """The AEAD before issue 8: AES-256-GCM, all-zero nonce, one key per message."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from veil.core import padding
    from veil.core import primitives as p
    keys_ = [p.random_bytes(32) for _ in range(n)]
    body, ad, nonce = padding.pad(PAYLOAD), b"\xad" * 200, bytes(12)

    def run() -> int:
        for mk in keys_:
            AESGCM(mk).decrypt(nonce, AESGCM(mk).encrypt(nonce, body, ad), ad)
        return n
    return run


# --- vodozemac (Rust Olm) -----------------------------------------------------------

def _vodo_pair() -> tuple[Any, Any]:
    import vodozemac as v
    a, b = v.Account(), v.Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys.values()))
    sa = a.create_outbound_session(b.curve25519_key, otk)
    sb, _ = b.create_inbound_session(a.curve25519_key, sa.encrypt(b"hi").to_pre_key())
    sa.decrypt(sb.encrypt(b"ack"))
    return sa, sb


def vodo_one_way(n: int) -> Callable[[], int]:
    sa, sb = _vodo_pair()

    def run() -> int:
        for _ in range(n):
            sb.decrypt(sa.encrypt(PAYLOAD))
        return n
    return run


def vodo_ping_pong(n: int) -> Callable[[], int]:
    sa, sb = _vodo_pair()

    def run() -> int:
        for _ in range(n // 2):
            sb.decrypt(sa.encrypt(PAYLOAD))
            sa.decrypt(sb.encrypt(PAYLOAD))
        return n // 2 * 2
    return run


def vodo_setup(n: int) -> Callable[[], int]:
    import vodozemac as v
    a, b = v.Account(), v.Account()

    def run() -> int:
        b.generate_one_time_keys(n)
        otks = list(b.one_time_keys.values())[:n]
        b.mark_keys_as_published()
        for otk in otks:
            sa = a.create_outbound_session(b.curve25519_key, otk)
            b.create_inbound_session(a.curve25519_key, sa.encrypt(PAYLOAD).to_pre_key())
        return n
    return run


def vodo_pk(n: int) -> Callable[[], int]:
    import vodozemac as v
    dec = v.PkDecryption()
    enc = v.PkEncryption.from_key(dec.public_key)

    def run() -> int:
        for _ in range(n):
            dec.decrypt(enc.encrypt(PAYLOAD))
        return n
    return run


# --- doubleratchet (pure Python) ----------------------------------------------------

def _dr_classes() -> dict[str, Any]:
    from doubleratchet.recommended import (
        HashFunction,
        aead_aes_hmac,
        diffie_hellman_ratchet_curve25519,
        kdf_hkdf,
        kdf_separate_hmacs,
    )

    class AEAD(aead_aes_hmac.AEAD):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench aead"

    class RootKDF(kdf_hkdf.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

        @staticmethod
        def _get_info() -> bytes:
            return b"bench root"

    class ChainKDF(kdf_separate_hmacs.KDF):
        @staticmethod
        def _get_hash_function() -> HashFunction:
            return HashFunction.SHA_256

    from doubleratchet import DoubleRatchet

    class Ratchet(DoubleRatchet):
        @staticmethod
        def _build_associated_data(associated_data: bytes, header: Any) -> bytes:
            return (associated_data + header.ratchet_pub
                    + header.previous_sending_chain_length.to_bytes(4, "big")
                    + header.sending_chain_length.to_bytes(4, "big"))

    return {"ratchet": Ratchet,
            "diffie_hellman_ratchet_class": diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet,
            "root_chain_kdf": RootKDF, "message_chain_kdf": ChainKDF,
            "message_chain_constant": b"\x01\x02", "dos_protection_threshold": 1000,
            "max_num_skipped_message_keys": 1000, "aead": AEAD}


def _dr_pair(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    import os

    from cryptography.hazmat.primitives.asymmetric import x25519
    cfg = _dr_classes()
    ratchet = cfg.pop("ratchet")
    bob_priv = x25519.X25519PrivateKey.generate()
    shared = os.urandom(32)

    async def setup() -> tuple[Any, Any]:
        a, first = await ratchet.encrypt_initial_message(
            shared_secret=shared, recipient_ratchet_pub=bob_priv.public_key().public_bytes_raw(),
            message=b"hi", associated_data=b"ad", **cfg)
        b, _ = await ratchet.decrypt_initial_message(
            shared_secret=shared, own_ratchet_priv=bob_priv.private_bytes_raw(), message=first,
            associated_data=b"ad", **cfg)
        await a.decrypt_message(await b.encrypt_message(b"ack", b"ad"), b"ad")
        return a, b
    return loop.run_until_complete(setup())


def dr_one_way(n: int, loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    a, b = _dr_pair(loop)

    async def go() -> None:
        for _ in range(n):
            await b.decrypt_message(await a.encrypt_message(PAYLOAD, b"ad"), b"ad")

    def run() -> int:
        loop.run_until_complete(go())
        return n
    return run


def dr_ping_pong(n: int, loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    a, b = _dr_pair(loop)

    async def go() -> None:
        for _ in range(n // 2):
            await b.decrypt_message(await a.encrypt_message(PAYLOAD, b"ad"), b"ad")
            await a.decrypt_message(await b.encrypt_message(PAYLOAD, b"ad"), b"ad")

    def run() -> int:
        loop.run_until_complete(go())
        return n // 2 * 2
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    rounds = 2 if opts.quick else opts.rounds
    scale = 20 if opts.quick else 1
    loop = asyncio.new_event_loop()
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "rounds": rounds}

    def emit(workload: str, unit: str, results: dict[str, tuple[float, float]],
             extra: dict[str, Any] | None = None) -> None:
        line: dict[str, Any] = {"workload": workload, "unit": unit}
        for name, (rate, micros) in results.items():
            line[name] = {"per_s": round(rate, 1), "median_us": round(micros, 2)}
        if "vodozemac" in results:
            line["veil_vs_vodozemac"] = round(results["veil"][0] / results["vodozemac"][0], 3)
        if "doubleratchet" in results:
            line["veil_vs_doubleratchet"] = round(results["veil"][0] / results["doubleratchet"][0],
                                                  3)
        line.update(extra or {})
        line["env"] = env
        print(json.dumps(line), flush=True)

    n = 4000 // scale
    emit("ratchet_one_way", "messages (256 B, encrypt+decrypt)", _interleaved({
        "veil": veil_one_way(n), "vodozemac": vodo_one_way(n),
        "doubleratchet": dr_one_way(n // 8, loop)}, rounds))
    n = 1000 // scale
    emit("ratchet_ping_pong", "messages (256 B, direction change each message)", _interleaved({
        "veil": veil_ping_pong(n), "vodozemac": vodo_ping_pong(n),
        "doubleratchet": dr_ping_pong(n // 4, loop)}, rounds))
    n = 200 // scale
    setup = _interleaved({"veil": veil_setup(n), "vodozemac": vodo_setup(n)}, rounds)
    emit("session_setup", "PQXDH initiate+respond (vodozemac: Olm 3DH)", setup,
         {"veil_median_setup_ms": round(setup["veil"][1] / 1e3, 3), "target_ms": 1.0})
    n = 2000 // scale
    emit("sealed_sender", "seal+open 256 B (vodozemac: PkEncryption, no sender auth)",
         _interleaved({"veil": veil_sealed(n), "vodozemac": vodo_pk(n)}, rounds))
    n = 8000 // scale
    aead = _interleaved({"veil": veil_message_aead(n),
                         "aes_gcm_fixed_nonce": previous_message_aead(n)}, rounds)
    emit("message_aead", "seal+open of one padded 256 B message (AES-256-GCM-SIV; "
         "reference: the AES-256-GCM it replaced)", aead,
         {"veil_vs_aes_gcm_fixed_nonce": round(aead["veil"][0]
                                               / aead["aes_gcm_fixed_nonce"][0], 3)})
    loop.close()


if __name__ == "__main__":
    main()
