"""Secret-tree ratchets: out-of-order tolerance and its bounds (RFC 9420 §9.4)."""

from __future__ import annotations

import pytest

from veil.core.mls.codec import Reader, Writer
from veil.core.mls.crypto import get_suite
from veil.core.mls.errors import GenerationTooFar, KeyReused, UnknownSender
from veil.core.mls.secret_tree import (
    APPLICATION,
    HANDSHAKE,
    MAX_FORWARD,
    MAX_SKIPPED,
    SecretTree,
)

SUITE = get_suite(1)


def _tree() -> SecretTree:
    return SecretTree(SUITE, b"\x07" * 32, 4)


def test_sender_and_receiver_agree_in_any_order() -> None:
    sender, receiver = _tree(), _tree()
    sent = [sender.ratchet(2, APPLICATION).next() for _ in range(20)]
    for gen, key, nonce in reversed(sent):
        rat = receiver.ratchet(2, APPLICATION)
        assert rat.peek(gen) == (key, nonce)
        rat.consume(gen)
    with pytest.raises(KeyReused):
        receiver.ratchet(2, APPLICATION).peek(5)


def test_handshake_and_application_ratchets_differ() -> None:
    t = _tree()
    assert t.ratchet(0, HANDSHAKE).peek(0) != t.ratchet(0, APPLICATION).peek(0)


def test_forward_jump_is_bounded() -> None:
    rat = _tree().ratchet(1, APPLICATION)
    rat.peek(MAX_FORWARD)
    with pytest.raises(GenerationTooFar):
        rat.peek(MAX_FORWARD + 1)


def test_skipped_keys_are_bounded_and_oldest_evicted() -> None:
    rat = _tree().ratchet(1, APPLICATION)
    rat.consume(MAX_SKIPPED + 10)
    assert len(rat.skipped) == MAX_SKIPPED
    with pytest.raises(KeyReused):
        rat.peek(0)
    rat.peek(MAX_SKIPPED + 9)


def test_leaf_outside_tree() -> None:
    with pytest.raises(UnknownSender):
        _tree().ratchet(4, HANDSHAKE)


def test_serialisation_round_trip() -> None:
    t = _tree()
    t.ratchet(3, APPLICATION).consume(3)
    w = Writer()
    t.write(w)
    back = SecretTree.read(Reader(w.bytes()), SUITE)
    assert back.ratchet(3, APPLICATION).peek(1) == t.ratchet(3, APPLICATION).peek(1)
    assert back.ratchet(0, HANDSHAKE).peek(0) == _tree().ratchet(0, HANDSHAKE).peek(0)
