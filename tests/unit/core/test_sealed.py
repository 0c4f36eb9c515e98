from __future__ import annotations

import pytest

from tests.unit.core.conftest import make_pair
from veil.core import keys, sealed
from veil.core.errors import (
    DecryptionFailed,
    ExpiredCertificate,
    InvalidSignature,
    MalformedMessage,
    UntrustedIdentity,
)

NOW = 1_800_000_000_000
LATER = NOW + 86_400_000
ACCOUNT = bytes(range(16))


@pytest.fixture(scope="module")
def root() -> sealed.TrustRoot:
    return sealed.TrustRoot.generate()


@pytest.fixture(scope="module")
def server(root: sealed.TrustRoot) -> sealed.ServerKey:
    return sealed.ServerKey.generate(root, key_id=7, expires_at=LATER * 10)


def test_seal_open_round_trip(root: sealed.TrustRoot, server: sealed.ServerKey,
                              alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    cert = server.issue(ACCOUNT, 3, alice.public, LATER)
    envelope = sealed.seal(alice, cert, bob.public, b"inner bytes", content_type=2)
    opened = sealed.open_envelope(bob, envelope, root.public, NOW)
    assert opened.content == b"inner bytes" and opened.content_type == 2
    assert opened.certificate.account_id == ACCOUNT and opened.certificate.device_id == 3
    assert opened.sender_identity == alice.public
    assert ACCOUNT not in envelope and alice.public.signing not in envelope


def test_envelope_sizes_are_padded(server: sealed.ServerKey, alice: keys.IdentityKeyPair,
                                   bob: keys.IdentityKeyPair) -> None:
    cert = server.issue(ACCOUNT, 1, alice.public, LATER)
    sizes = {len(sealed.seal(alice, cert, bob.public, bytes(n))) for n in range(40, 60)}
    assert len(sizes) <= 2          # twenty content sizes, at most two envelope sizes


def test_only_the_recipient_can_open(root: sealed.TrustRoot, server: sealed.ServerKey,
                                     alice: keys.IdentityKeyPair,
                                     bob: keys.IdentityKeyPair) -> None:
    cert = server.issue(ACCOUNT, 1, alice.public, LATER)
    envelope = sealed.seal(alice, cert, bob.public, b"x")
    with pytest.raises(DecryptionFailed):
        sealed.open_envelope(keys.IdentityKeyPair.generate(), envelope, root.public, NOW)


def test_expired_and_foreign_certificates(root: sealed.TrustRoot, server: sealed.ServerKey,
                                          alice: keys.IdentityKeyPair,
                                          bob: keys.IdentityKeyPair) -> None:
    cert = server.issue(ACCOUNT, 1, alice.public, NOW - 1)
    with pytest.raises(ExpiredCertificate):
        sealed.open_envelope(bob, sealed.seal(alice, cert, bob.public, b"x"), root.public, NOW)
    other_root = sealed.TrustRoot.generate()
    rogue = sealed.ServerKey.generate(other_root, 1, LATER)
    cert = rogue.issue(ACCOUNT, 1, alice.public, LATER)
    with pytest.raises(InvalidSignature):
        sealed.open_envelope(bob, sealed.seal(alice, cert, bob.public, b"x"), root.public, NOW)
    expired_server = sealed.ServerKey.generate(root, 2, NOW - 1)
    cert = expired_server.issue(ACCOUNT, 1, alice.public, LATER)
    with pytest.raises(ExpiredCertificate):
        sealed.open_envelope(bob, sealed.seal(alice, cert, bob.public, b"x"), root.public, NOW)


def test_certificate_must_match_sender_and_session(root: sealed.TrustRoot,
                                                   server: sealed.ServerKey,
                                                   alice: keys.IdentityKeyPair,
                                                   bob: keys.IdentityKeyPair) -> None:
    mallory = keys.IdentityKeyPair.generate()
    alice_cert = server.issue(ACCOUNT, 1, alice.public, LATER)
    with pytest.raises(UntrustedIdentity):
        sealed.seal(mallory, alice_cert, bob.public, b"x")
    mallory_cert = server.issue(bytes(16), 1, mallory.public, LATER)
    opened = sealed.open_envelope(bob, sealed.seal(mallory, mallory_cert, bob.public, b"x"),
                                  root.public, NOW)
    _, bob_session = make_pair(alice, bob)          # Bob's session is with Alice
    with pytest.raises(UntrustedIdentity):
        opened.check_session(bob_session.remote_identity)
    opened_alice = sealed.open_envelope(bob, sealed.seal(alice, alice_cert, bob.public, b"y"),
                                        root.public, NOW)
    opened_alice.check_session(bob_session.remote_identity)


def test_tampering_and_malformed(root: sealed.TrustRoot, server: sealed.ServerKey,
                                 alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair) -> None:
    envelope = sealed.seal(alice, server.issue(ACCOUNT, 1, alice.public, LATER), bob.public, b"x")
    for index in (0, 5, 40, 200, len(envelope) - 1):
        damaged = bytearray(envelope)
        damaged[index] ^= 4
        with pytest.raises((DecryptionFailed, MalformedMessage)):
            sealed.open_envelope(bob, bytes(damaged), root.public, NOW)
    with pytest.raises(MalformedMessage):
        sealed.open_envelope(bob, envelope[:50], root.public, NOW)


def test_certificates_round_trip(server: sealed.ServerKey, alice: keys.IdentityKeyPair,
                                 root: sealed.TrustRoot) -> None:
    cert = server.issue(ACCOUNT, 9, alice.public, LATER)
    again = sealed.SenderCertificate.from_bytes(cert.to_bytes())
    assert again == cert
    again.validate(root.public, NOW)
    restored = sealed.ServerKey.from_bytes(server.to_bytes())
    assert restored.certificate == server.certificate
    assert sealed.TrustRoot.from_bytes(root.to_bytes()).public == root.public


def test_access_key() -> None:
    key = sealed.derive_access_key(b"k" * 32)
    assert len(key) == 16 and key == sealed.derive_access_key(b"k" * 32)
    assert key != sealed.derive_access_key(b"j" * 32)
    with pytest.raises(MalformedMessage):
        sealed.derive_access_key(b"short")


def test_certificate_of_another_identity_is_refused_on_open(
        root: sealed.TrustRoot, server: sealed.ServerKey, alice: keys.IdentityKeyPair,
        bob: keys.IdentityKeyPair) -> None:
    """Mallory builds an envelope by hand with Alice's (valid) certificate inside."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    from veil.core import padding
    from veil.core import primitives as p
    from veil.core.encoding import Writer

    mallory = keys.IdentityKeyPair.generate()
    alice_cert = server.issue(ACCOUNT, 1, alice.public, LATER)
    eph = x25519.X25519PrivateKey.generate()
    e_pub = eph.public_key().public_bytes_raw()
    chain, k1 = sealed._ephemeral_keys(p.dh(eph, bob.public.dh_key), e_pub, bob.public.dh)
    version = bytes((sealed.ENVELOPE_VERSION,))
    static_ct = p.seal_message(k1, mallory.public.to_bytes(), version + e_pub)
    k2 = p.hkdf(mallory.dh(bob.public.dh_key), chain + static_ct, sealed._STATIC_INFO,
                p.MESSAGE_KEY_LEN)
    inner = Writer().u8(1).raw(alice_cert.to_bytes()).var(b"I am Alice").finish()
    padded = padding.pad_to(inner, sealed.envelope_length(len(inner)) - sealed._ENVELOPE_OVERHEAD)
    body = p.seal_message(k2, padded, version + e_pub + static_ct)
    envelope = version + e_pub + static_ct + body
    with pytest.raises(UntrustedIdentity):
        sealed.open_envelope(bob, envelope, root.public, NOW)


def test_a_certificate_can_name_the_username_and_signs_it(
        server: sealed.ServerKey, alice: keys.IdentityKeyPair, bob: keys.IdentityKeyPair,
        root: sealed.TrustRoot) -> None:
    plain = server.issue(ACCOUNT, 1, alice.public, LATER)
    named = server.issue(ACCOUNT, 1, alice.public, LATER, "alice")
    assert plain.to_bytes()[0] == 1 and named.to_bytes()[0] == 2   # v1 stays v1
    again = sealed.SenderCertificate.from_bytes(named.to_bytes())
    assert again == named and again.username == "alice"
    again.validate(root.public, NOW)
    envelope = sealed.seal(alice, named, bob.public, b"hi")
    assert sealed.open_envelope(bob, envelope, root.public, NOW).certificate.username == "alice"
    # The username is signed: renaming the sender breaks the certificate.
    renamed = named.to_bytes().replace(b"alice", b"carol")
    with pytest.raises(InvalidSignature):
        sealed.SenderCertificate.from_bytes(renamed).validate(root.public, NOW)
    # Nor can a version-2 certificate be passed off as version 1 (domain labels differ).
    relabelled = sealed.SenderCertificate(named.account_id, 1, alice.public, LATER,
                                          named.server_certificate, named.signature)
    with pytest.raises(InvalidSignature):
        relabelled.validate(root.public, NOW)
    for bad in ("", "x" * 33, "al\nice", "ålice"):
        with pytest.raises(MalformedMessage):
            server.issue(ACCOUNT, 1, alice.public, LATER, bad)
    broken = bytearray(named.to_bytes())
    broken[1 + 16 + 4 + keys.IdentityPublicKey.SIZE + 8 + 4] = 0xFF   # not ASCII
    with pytest.raises(MalformedMessage):
        sealed.SenderCertificate.from_bytes(bytes(broken))
