"""Known-answer tests that pin the 1:1 core's saved and wire formats (version 2).

``tests/vectors/veil/core-formats-v2.json`` was generated once by ``format_fixture.py``
and committed. Today's code must read every saved state in it, write it back byte for
byte, and decrypt the pinned messages with it: a change that would break stored
sessions, prekeys or messages in flight fails here instead of on people's devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from veil.core import keys, prekeys, sealed, session
from veil.core.errors import DuplicateMessage

FIXTURE = Path(__file__).resolve().parents[2] / "vectors" / "veil" / "core-formats-v2.json"
h = bytes.fromhex


@pytest.fixture(scope="module")
def fx() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    assert data["format"] == "2"
    return data


def test_version_bytes_are_pinned(fx: dict[str, Any]) -> None:
    # Sealed envelopes are written as version 3 since issue 10 §4 (test_sealed_v3.py);
    # the version-2 envelope pinned here must still open.
    assert (session.VERSION, sealed.ENVELOPE_VERSION) == (2, 3)
    assert h(fx["messages_to_bob"][0]["wire"])[:2] == bytes((2, session.TYPE_MESSAGE))
    assert h(fx["initial_from_carol"]["wire"])[:2] == bytes((2, session.TYPE_PREKEY))
    assert h(fx["sealed_envelope"]["wire"])[0] == 2
    assert h(fx["bob_prekeys"])[0] == 2


def test_saved_sessions_read_back_and_write_the_same_bytes(fx: dict[str, Any]) -> None:
    for name in ("alice_session", "bob_session"):
        assert session.Session.from_bytes(h(fx[name])).to_bytes() == h(fx[name])


def test_saved_session_decrypts_messages_in_flight(fx: dict[str, Any]) -> None:
    bob = session.Session.from_bytes(h(fx["bob_session"]))
    now = fx["now_ms"]
    late, pending = fx["messages_to_bob"]
    assert bob.decrypt(h(pending["wire"]), now_ms=now) == h(pending["plaintext"])
    assert bob.decrypt(h(late["wire"]), now_ms=now) == h(late["plaintext"])   # skipped key
    with pytest.raises(DuplicateMessage):
        bob.decrypt(h(late["wire"]), now_ms=now)
    alice = session.Session.from_bytes(h(fx["alice_session"]))
    assert bob.decrypt(alice.encrypt(b"after the restore")) == b"after the restore"
    assert alice.decrypt(bob.encrypt(b"both ways")) == b"both ways"


def test_saved_prekeys_answer_a_pinned_initial_message(fx: dict[str, Any]) -> None:
    bob = keys.IdentityKeyPair.from_bytes(h(fx["bob_identity"]))
    assert bob.to_bytes() == h(fx["bob_identity"])
    stored = prekeys.PreKeys.from_bytes(h(fx["bob_prekeys"]))
    assert stored.to_bytes() == h(fx["bob_prekeys"])
    assert stored.next_rotation_ms() == fx["now_ms"] + prekeys.ROTATE_AFTER_MS
    carol = keys.IdentityPublicKey.from_bytes(h(fx["carol_identity_public"]))
    first = fx["initial_from_carol"]
    s, text = session.respond(bob, stored, h(first["wire"]), expected_identity=carol)
    assert text == h(first["plaintext"]) and s.remote_identity == carol
    bundle = keys.PreKeyBundle.from_bytes(h(fx["bob_bundle"]))
    assert bundle.to_bytes() == h(fx["bob_bundle"]) and bundle.identity == bob.public


def test_pinned_sealed_envelope_and_certificates_open(fx: dict[str, Any]) -> None:
    bob = keys.IdentityKeyPair.from_bytes(h(fx["bob_identity"]))
    alice = keys.IdentityKeyPair.from_bytes(h(fx["alice_identity"]))
    root = h(fx["trust_root_public"])
    env = fx["sealed_envelope"]
    opened = sealed.open_envelope(bob, h(env["wire"]), root, fx["now_ms"])
    assert opened.content == h(env["content"]) and opened.sender_identity == alice.public
    assert opened.certificate.account_id == h(env["account"])
    assert opened.certificate.device_id == env["device"]
    assert opened.certificate.to_bytes() == h(fx["sender_certificate"])
    statement = sealed.KeyStatement.from_bytes(h(fx["key_statement"]), root)
    assert (statement.min_key_id, statement.issued_at) == (5, fx["now_ms"])
    assert statement.to_bytes() == h(fx["key_statement"])
