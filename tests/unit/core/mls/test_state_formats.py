"""Known-answer tests for the saved group-state formats (``veil.core.mls.persist``).

The fixtures in ``tests/vectors/veil/mls-state-v*.json`` were generated once, by the code
of each format version, and committed (how to regenerate: ``state_fixture.py``). Today's
code must restore them and decrypt the pinned messages with them: a change that breaks
stored data fails here. A change of format gets a new version and a new fixture; these
stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from veil.core.mls.errors import KeyReused, UnsupportedStateVersion
from veil.core.mls.group import ApplicationMessage, Group, SavedGroup, StagedCommit
from veil.core.mls.persist import KIND_HOT, KIND_SINGLE, KIND_SLOW
from veil.core.mls.state import LEGACY_VERSION, STATE_VERSION

FIXTURES = Path(__file__).resolve().parents[4] / "tests" / "vectors" / "veil"
NOW = 1_800_000_000
h = bytes.fromhex


def _fixture(version: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"mls-state-v{version}.json").read_text())
    assert data["format"] == str(version)
    return data


def _check_member(group: Group, fx: dict[str, Any]) -> None:
    """The restored member reads the pinned messages and follows the pinned commit."""
    assert group.epoch == fx["epoch"] and group.my_leaf == fx["my_leaf"]
    assert group.epoch_authenticator == h(fx["epoch_authenticator"])
    assert group.config.private_handshakes is fx["private_handshakes"]
    for m in fx["messages"]:
        if m["consumed_before_save"]:
            with pytest.raises(KeyReused):
                group.process(h(m["ciphertext"]), now=NOW)
        else:
            got = group.process(h(m["ciphertext"]), now=NOW)
            assert got == ApplicationMessage(m["sender"], h(m["plaintext"]),
                                             h(m["authenticated_data"]))
    staged = group.process(h(fx["commit"]), now=NOW)
    assert isinstance(staged, StagedCommit) and staged.committer == 0
    group.merge_staged(staged)
    assert group.epoch_authenticator == h(fx["epoch_authenticator_after_commit"])
    after = fx["message_after_commit"]
    got = group.process(h(after["ciphertext"]), now=NOW)
    assert isinstance(got, ApplicationMessage) and got.data == h(after["plaintext"])


def test_format_constants_are_pinned() -> None:
    fx = _fixture(2)
    assert (LEGACY_VERSION, STATE_VERSION) == (1, 2)
    assert h(fx["slow"])[:2] == bytes((STATE_VERSION, KIND_SLOW))
    assert h(fx["hot"])[:2] == bytes((STATE_VERSION, KIND_HOT))
    assert h(_fixture(1)["state"])[:1] == bytes((LEGACY_VERSION,))
    assert KIND_SINGLE == 3


def test_v2_fixture_restores_and_decrypts_pinned_messages() -> None:
    fx = _fixture(2)
    # No configuration passed: it comes from the slow part (private handshakes here).
    _check_member(Group.restore(SavedGroup(h(fx["slow"]), h(fx["hot"]))), fx)


def test_v2_fixture_re_encodes_to_the_same_bytes() -> None:
    fx = _fixture(2)
    saved = SavedGroup(h(fx["slow"]), h(fx["hot"]))
    group = Group.restore(saved)
    assert group.dirty == frozenset()
    assert group.save() == saved
    # The single-blob form holds the same two parts.
    _check_member(Group.restore(group.serialize()), fx)


def test_v1_fixture_restores_as_legacy_and_saves_in_the_split_form() -> None:
    fx = _fixture(1)
    blob = h(fx["state"])
    with pytest.raises(UnsupportedStateVersion, match="restore_legacy"):
        Group.restore(blob)
    legacy = Group.restore_legacy(blob, private_handshakes=True, unique_credentials=True)
    assert legacy.dirty == {"slow", "hot"}
    saved = legacy.save()
    assert saved.slow[:2] == bytes((STATE_VERSION, KIND_SLOW))
    _check_member(Group.restore(saved), fx)
    _check_member(Group.restore_legacy(blob, private_handshakes=True,
                                       unique_credentials=True), fx)


def test_v2_parts_are_refused_by_the_legacy_reader() -> None:
    fx = _fixture(2)
    with pytest.raises(UnsupportedStateVersion, match=r"Group\.restore\b"):
        Group.restore_legacy(h(fx["slow"]), private_handshakes=True, unique_credentials=True)
