"""Sealed envelopes of version 3: padded to size classes inside the AEAD and stripped
strictly (issue 10 §4, item 3). ``sealed-envelope-v3.json`` pins the new format
(written by ``sealed_v3_fixture.py``); ``core-formats-v2.json`` keeps pinning version 2,
which is still opened (``test_formats.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.core.sealed_v3_fixture import hand_sealed, inner
from veil.core import keys, padding, prekeys, sealed, session
from veil.core.errors import DecryptionFailed, MalformedMessage

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "veil"
h = bytes.fromhex
NOW = 1_800_000_000_000


@pytest.fixture(scope="module")
def fx() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "sealed-envelope-v3.json").read_text())
    assert data["format"] == "sealed-envelope-v3"
    return data


@pytest.fixture(scope="module")
def parties() -> tuple[keys.IdentityKeyPair, keys.IdentityKeyPair, sealed.TrustRoot,
                       sealed.SenderCertificate]:
    alice, bob = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    root = sealed.TrustRoot.generate()
    server = sealed.ServerKey.generate(root, 1, NOW + 10 * 86_400_000)
    return alice, bob, root, server.issue(bytes(16), 1, alice.public, NOW + 86_400_000)


def test_pinned_v3_envelopes_open_and_have_their_class_sizes(fx: dict[str, Any]) -> None:
    bob = keys.IdentityKeyPair.from_bytes(h(fx["bob_identity"]))
    alice = keys.IdentityPublicKey.from_bytes(h(fx["alice_identity_public"]))
    root = h(fx["trust_root_public"])
    sizes = []
    for env in fx["envelopes"]:
        wire = h(env["wire"])
        assert wire[0] == 3 and len(wire) == env["size"]
        opened = sealed.open_envelope(bob, wire, root, fx["now_ms"])
        assert opened.content == h(env["content"]) and opened.sender_identity == alice
        assert opened.certificate.to_bytes() == h(fx["sender_certificate"])
        assert opened.certificate.device_id == fx["device"]
        sizes.append(len(wire))
    assert sizes == [2560, 2560, 2560, 4096, 16384]
    for refused in fx["refused"]:
        with pytest.raises(MalformedMessage):
            sealed.open_envelope(bob, h(refused["wire"]), root, fx["now_ms"])


def test_version_2_envelopes_still_open_and_version_3_is_written() -> None:
    fx = json.loads((VECTORS / "core-formats-v2.json").read_text())
    bob = keys.IdentityKeyPair.from_bytes(h(fx["bob_identity"]))
    env = fx["sealed_envelope"]
    wire = h(env["wire"])
    assert wire[0] == 2 and sealed.READABLE_ENVELOPE_VERSIONS == (2, 3)
    opened = sealed.open_envelope(bob, wire, h(fx["trust_root_public"]), fx["now_ms"])
    assert opened.content == h(env["content"])
    # The version byte is in both layers' associated data: not re-labelled either way.
    with pytest.raises(DecryptionFailed):
        sealed.open_envelope(bob, b"\x03" + wire[1:], h(fx["trust_root_public"]),
                             fx["now_ms"])
    assert sealed.ENVELOPE_VERSION == 3


def test_a_first_message_and_a_later_one_have_the_same_size(parties: Any) -> None:
    """The measurement of issue 10 §4 item 3: about 2,050 and 770 bytes before."""
    alice, bob, root, cert = parties
    bob_keys = prekeys.PreKeys.generate(bob, now_ms=NOW, one_time=1)
    text = b'{"v":1,"id":"' + b"a" * 32 + b'","ts":1,"kind":"text","text":"hi"}'
    a, first = session.initiate(alice, bob_keys.bundle(), text)
    b, _ = session.respond(bob, bob_keys, first, now_ms=NOW)
    a.decrypt(b.encrypt(b"ok"), now_ms=NOW)
    later = a.encrypt(text)
    assert len(first) > 1400 and len(later) < 300          # as different as they were
    sizes = {len(sealed.seal(alice, cert, bob.public, m)) for m in (first, later)}
    assert sizes == {padding.ENVELOPE_BUCKETS[0]}
    for m in (first, later):
        env = sealed.seal(alice, cert, bob.public, m)
        assert sealed.open_envelope(bob, env, root.public, NOW).content == m


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=70_000))
def test_every_envelope_is_exactly_its_class(parties: Any, n: int) -> None:
    alice, bob, root, cert = parties
    env = sealed.seal(alice, cert, bob.public, bytes(n))
    assert len(env) == sealed.envelope_length(len(inner(cert, bytes(n))))
    assert len(env) in padding.ENVELOPE_BUCKETS or len(env) > padding.ENVELOPE_BUCKETS[-1]
    assert sealed.open_envelope(bob, env, root.public, NOW).content == bytes(n)


def test_padding_is_stripped_strictly(parties: Any) -> None:
    alice, bob, root, cert = parties
    body = inner(cert, b"x")
    room = 2560 - sealed._ENVELOPE_OVERHEAD
    good = padding.pad_to(body, room)
    assert sealed.open_envelope(bob, hand_sealed(alice, cert, bob.public, good, 3),
                                root.public, NOW).content == b"x"
    bad = [
        body + bytes(room - len(body)),                       # no terminator
        body + b"\x80" + bytes(room - len(body) - 2) + b"\x01",   # a byte after it
        body + b"\x80\x00\x80" + bytes(room - len(body) - 3),     # a second one
        padding.pad_to(body, room + 4096 - 2560),             # a larger class
        padding.pad_to(body, room - 1),                       # no class at all
    ]
    for plaintext in bad:
        with pytest.raises(MalformedMessage):
            sealed.open_envelope(bob, hand_sealed(alice, cert, bob.public, plaintext, 3),
                                 root.public, NOW)


def test_bucket_lengths() -> None:
    assert [padding.bucket_length(n) for n in (1, 2560, 2561, 4096, 65536)] == \
        [2560, 2560, 4096, 4096, 65536]
    assert padding.bucket_length(65537) == padding.padme_length(65537) == 67584
    assert padding.unpad(padding.pad_to(b"abc", 10)) == b"abc"
    with pytest.raises(MalformedMessage):
        padding.pad_to(b"abc", 3)
