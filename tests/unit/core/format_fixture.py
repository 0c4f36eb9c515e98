"""Writes ``tests/vectors/veil/core-formats-v2.json``: saved 1:1 state and wire bytes of
today's formats, generated once and committed (``test_formats.py`` reads them).

Randomness comes from the OS, so a regenerated file differs byte for byte: regenerate
only together with a format version bump, and keep the old file's test passing
(``python -m tests.unit.core.format_fixture``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from veil.core import keys, prekeys, sealed, session

OUT = Path(__file__).resolve().parents[2] / "vectors" / "veil" / "core-formats-v2.json"
NOW_MS = 1_800_000_000_000
ACCOUNT = bytes(range(16))


def build() -> dict[str, Any]:
    alice, bob, carol = (keys.IdentityKeyPair.generate() for _ in range(3))
    bob_keys = prekeys.PreKeys.generate(bob, now_ms=NOW_MS, one_time=2)
    a, first = session.initiate(alice, bob_keys.bundle(), b"hello bob")
    b, _ = session.respond(bob, bob_keys, first, now_ms=NOW_MS)
    a.decrypt(b.encrypt(b"hello alice"), now_ms=NOW_MS)
    skipped = a.encrypt(b"sent first, arrives last")
    in_order = a.encrypt(b"sent second")
    b.decrypt(in_order, now_ms=NOW_MS)                 # leaves one skipped key in b
    pending = a.encrypt(b"not yet received when saved")
    bundle = bob_keys.bundle()
    _, from_carol = session.initiate(carol, bundle, b"hi, it's carol")
    root = sealed.TrustRoot.generate()
    server = sealed.ServerKey.generate(root, 7, NOW_MS + 10 * 86_400_000)
    cert = server.issue(ACCOUNT, 3, alice.public, NOW_MS + 86_400_000)
    envelope = sealed.seal(alice, cert, bob.public, b"sealed content")
    return {
        "format": "2",
        "now_ms": NOW_MS,
        "alice_identity": alice.to_bytes().hex(),
        "bob_identity": bob.to_bytes().hex(),
        "carol_identity_public": carol.public.to_bytes().hex(),
        "bob_prekeys": bob_keys.to_bytes().hex(),
        "bob_bundle": bundle.to_bytes().hex(),
        "alice_session": a.to_bytes().hex(),
        "bob_session": b.to_bytes().hex(),
        "messages_to_bob": [
            {"wire": skipped.hex(), "plaintext": b"sent first, arrives last".hex()},
            {"wire": pending.hex(), "plaintext": b"not yet received when saved".hex()},
        ],
        "initial_from_carol": {"wire": from_carol.hex(), "plaintext": b"hi, it's carol".hex()},
        "trust_root_public": root.public.hex(),
        "sender_certificate": cert.to_bytes().hex(),
        "sealed_envelope": {"wire": envelope.hex(), "content": b"sealed content".hex(),
                            "account": ACCOUNT.hex(), "device": 3},
        "key_statement": root.issue_statement(5, NOW_MS).to_bytes().hex(),
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
