"""Key schedule, pre-shared keys, exporter and transcript hashes (RFC 9420 §8, §8.2–§8.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.mls.codec import Writer
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.messages import FramedContent
from veil.core.mls.proposals import PreSharedKeyID


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """Everything derived from one epoch secret (RFC 9420 §8, Table 4)."""

    joiner_secret: bytes
    welcome_secret: bytes
    epoch_secret: bytes
    sender_data_secret: bytes
    encryption_secret: bytes
    exporter_secret: bytes
    external_secret: bytes
    confirmation_key: bytes
    membership_key: bytes
    resumption_psk: bytes
    epoch_authenticator: bytes
    init_secret: bytes


def joiner_secret(
    suite: CipherSuite, init_secret: bytes, commit_secret: bytes | None, group_context: bytes
) -> bytes:
    ikm = commit_secret if commit_secret is not None else bytes(suite.nh)
    return suite.expand_with_label(
        suite.extract(init_secret, ikm), b"joiner", group_context, suite.nh
    )


def welcome_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes | None) -> bytes:
    member = suite.extract(joiner, psk_secret if psk_secret is not None else bytes(suite.nh))
    return suite.derive_secret(member, b"welcome")


def welcome_key_nonce(suite: CipherSuite, welcome: bytes) -> tuple[bytes, bytes]:
    return (
        suite.expand_with_label(welcome, b"key", b"", suite.nk),
        suite.expand_with_label(welcome, b"nonce", b"", suite.nn),
    )


def epoch_from_joiner(
    suite: CipherSuite, joiner: bytes, psk_secret: bytes | None, group_context: bytes
) -> EpochSecrets:
    member = suite.extract(joiner, psk_secret if psk_secret is not None else bytes(suite.nh))
    epoch = suite.expand_with_label(member, b"epoch", group_context, suite.nh)
    d = suite.derive_secret
    return EpochSecrets(
        joiner_secret=joiner,
        welcome_secret=d(member, b"welcome"),
        epoch_secret=epoch,
        sender_data_secret=d(epoch, b"sender data"),
        encryption_secret=d(epoch, b"encryption"),
        exporter_secret=d(epoch, b"exporter"),
        external_secret=d(epoch, b"external"),
        confirmation_key=d(epoch, b"confirm"),
        membership_key=d(epoch, b"membership"),
        resumption_psk=d(epoch, b"resumption"),
        epoch_authenticator=d(epoch, b"authentication"),
        init_secret=d(epoch, b"init"),
    )


def next_epoch(
    suite: CipherSuite,
    init_secret: bytes,
    commit_secret: bytes | None,
    psk_secret: bytes | None,
    group_context: bytes,
) -> EpochSecrets:
    joiner = joiner_secret(suite, init_secret, commit_secret, group_context)
    return epoch_from_joiner(suite, joiner, psk_secret, group_context)


def export_secret(
    suite: CipherSuite, exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """MLS-Exporter (RFC 9420 §8.5)."""
    derived = suite.derive_secret(exporter_secret, label)
    return suite.expand_with_label(derived, b"exported", suite.hash(context), length)


def external_pub(suite: CipherSuite, external_secret: bytes) -> bytes:
    return suite.derive_key_pair(external_secret).public


def psk_secret(suite: CipherSuite, psks: list[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """Chain the PSKs into psk_secret (RFC 9420 §8.4); all-zero when there are none."""
    secret = bytes(suite.nh)
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        extracted = suite.extract(bytes(suite.nh), psk)
        label = Writer()
        psk_id.write(label)
        label.u16(index)
        label.u16(count)
        psk_input = suite.expand_with_label(extracted, b"derived psk", label.bytes(), suite.nh)
        secret = suite.extract(psk_input, secret)
    return secret


def confirmed_transcript_hash(
    suite: CipherSuite,
    interim_before: bytes,
    wire_format: int,
    content: FramedContent,
    signature: bytes,
) -> bytes:
    w = Writer()
    w.raw(interim_before)
    w.u16(wire_format)
    content.write(w)
    w.opaque(signature)
    return suite.hash(w.bytes())


def interim_transcript_hash(
    suite: CipherSuite, confirmed: bytes, confirmation_tag: bytes
) -> bytes:
    w = Writer()
    w.raw(confirmed)
    w.opaque(confirmation_tag)
    return suite.hash(w.bytes())

__all__ = [
    "EpochSecrets",
    "confirmed_transcript_hash",
    "epoch_from_joiner",
    "export_secret",
    "external_pub",
    "interim_transcript_hash",
    "next_epoch",
    "psk_secret",
    "welcome_key_nonce",
    "welcome_secret",
]
