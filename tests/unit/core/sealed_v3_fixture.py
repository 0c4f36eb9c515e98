"""Writes ``tests/vectors/veil/sealed-envelope-v3.json``: sealed envelopes of version 3
(padded to size classes, issue 10 §4 item 3), generated once and committed
(``test_sealed_v3.py`` reads them; the version-2 envelope stays in
``core-formats-v2.json``).

Randomness comes from the OS, so a regenerated file differs byte for byte: regenerate
only together with a format version bump (``python -m tests.unit.core.sealed_v3_fixture``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from veil.core import keys, padding, sealed
from veil.core import primitives as p
from veil.core.encoding import Writer

OUT = Path(__file__).resolve().parents[2] / "vectors" / "veil" / "sealed-envelope-v3.json"
NOW_MS = 1_800_000_000_000
ACCOUNT = bytes(range(16))
# Content sizes: a short ratchet message, a first (PQXDH) message with a short text,
# the largest that fits the smallest class, the smallest that does not, a long one.
SIZES = (218, 1_560, 2_029, 2_030, 9_000)


def hand_sealed(sender: keys.IdentityKeyPair, cert: sealed.SenderCertificate,
                recipient: keys.IdentityPublicKey, plaintext: bytes, version: int) -> bytes:
    """An envelope built outside ``seal`` around an already padded static-layer
    plaintext (for envelopes ``seal`` would never write)."""
    eph = x25519.X25519PrivateKey.generate()
    e_pub = eph.public_key().public_bytes_raw()
    chain, k1 = sealed._ephemeral_keys(p.dh(eph, recipient.dh_key), e_pub, recipient.dh)
    v = bytes((version,))
    static_ct = p.seal_message(k1, sender.public.to_bytes(), v + e_pub)
    k2 = p.hkdf(sender.dh(recipient.dh_key), chain + static_ct, sealed._STATIC_INFO,
                p.MESSAGE_KEY_LEN)
    return v + e_pub + static_ct + p.seal_message(k2, plaintext, v + e_pub + static_ct)


def inner(cert: sealed.SenderCertificate, content: bytes) -> bytes:
    return Writer().u8(1).raw(cert.to_bytes()).var(content).finish()


def build() -> dict[str, Any]:
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    root = sealed.TrustRoot.generate()
    server = sealed.ServerKey.generate(root, 7, NOW_MS + 10 * 86_400_000)
    cert = server.issue(ACCOUNT, 3, alice.public, NOW_MS + 86_400_000)
    envelopes = []
    for n in SIZES:
        content = bytes((i * 7 + n) % 256 for i in range(n))
        wire = sealed.seal(alice, cert, bob.public, content)
        envelopes.append({"wire": wire.hex(), "content": content.hex(), "size": len(wire)})
    short = inner(cert, b"padded to the wrong class")
    # Well-formed padding, authenticated, but one class too large: refused.
    too_big = hand_sealed(alice, cert, bob.public, padding.pad_to(
        short, 4096 - sealed._ENVELOPE_OVERHEAD), 3)
    # Padmé (version 2's padding) under the version-3 byte: refused.
    padme = hand_sealed(alice, cert, bob.public, padding.pad(short), 3)
    return {
        "format": "sealed-envelope-v3",
        "now_ms": NOW_MS,
        "bob_identity": bob.to_bytes().hex(),
        "alice_identity_public": alice.public.to_bytes().hex(),
        "trust_root_public": root.public.hex(),
        "sender_certificate": cert.to_bytes().hex(),
        "account": ACCOUNT.hex(),
        "device": 3,
        "envelopes": envelopes,
        "refused": [{"wire": too_big.hex(), "why": "padded to a larger class"},
                    {"wire": padme.hex(), "why": "not padded to a class"}],
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
