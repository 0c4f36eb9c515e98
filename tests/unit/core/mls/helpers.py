"""Builders shared by the MLS unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from veil.core.mls.codec import decode_all
from veil.core.mls.group import Group
from veil.core.mls.leaf import Credential
from veil.core.mls.messages import MLSMessage, PublicMessage
from veil.core.mls.proposals import Commit, Proposal
from veil.core.mls.state import GroupState
from veil.core.mls.validation import CredentialCheck, basic_credential_check
from veil.core.mls.welcome import KeyPackageBundle

NOW = 1_800_000_000
DAY = 24 * 3600


def bundle(name: str, suite: int = 1, now: int = NOW, **kwargs: Any) -> KeyPackageBundle:
    return Group.key_package(suite, Credential.basic(name.encode()), now=now, **kwargs)


def make_group(n: int, suite: int = 1, private_handshakes: bool = False,
               credential_check: CredentialCheck = basic_credential_check) -> list[Group]:
    """A creator plus ``n - 1`` members added in one commit; all at epoch 1."""
    creator = Group.create(suite, Credential.basic(b"m0"), now=NOW,
                           private_handshakes=private_handshakes,
                           credential_check=credential_check)
    bundles = [bundle(f"m{i}", suite) for i in range(1, n)]
    members = [creator]
    if bundles:
        out = creator.commit(add=[b.key_package.encoded() for b in bundles], now=NOW)
        creator.merge_pending_commit()
        assert out.welcome is not None
        members += [Group.join(out.welcome, b, now=NOW, private_handshakes=private_handshakes,
                               credential_check=credential_check)
                    for b in bundles]
    return members


def deliver(commit: bytes, groups: list[Group]) -> None:
    for g in groups:
        g.process_and_merge(commit, now=NOW)


def same_epoch(groups: list[Group]) -> bool:
    return len({g.epoch_authenticator for g in groups}) == 1 and len(
        {g.epoch for g in groups}) == 1


def state(group: Group) -> GroupState:
    """A member's live state, for tests that play a member who edits its own structures."""
    return group._live()


def committed(commit: bytes, receiver: Group) -> list[Proposal]:
    """The proposals a PublicMessage Commit carries, references resolved in ``receiver``'s
    cache (call it before ``receiver`` processes the commit)."""
    body = decode_all(commit, MLSMessage.read).body
    assert isinstance(body, PublicMessage)
    content = body.content.content
    assert isinstance(content, Commit)
    cache = state(receiver).proposals
    out: list[Proposal] = []
    for por in content.proposals:
        if por.proposal is not None:
            out.append(por.proposal)
        else:
            assert por.reference is not None
            out.append(cache[por.reference].proposal)
    return out


def _everything(*args: Any, inline: list[Any], cached: list[Any], **kwargs: Any) -> list[Any]:
    return [*cached, *inline]


@contextmanager
def misbehaving() -> Iterator[pytest.MonkeyPatch]:
    """Run the enclosed calls as a misbehaving member would: the checks the library makes
    on what *it sends* (proposal lists, external-commit contents) are switched off, so it
    emits what an honest library refuses to build. Honest members must process the result
    outside this block, where the library is unmodified. Yields the patcher, so a test can
    tamper with more of the sender's code for the same call.
    """
    from veil.core.mls import external, group_ops

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(group_ops, "validate_proposals", lambda *a, **k: None)
        mp.setattr(group_ops, "select_proposals", _everything, raising=False)
        mp.setattr(external, "_check_external_proposals", lambda *a, **k: None)
        mp.setattr(external, "check_joiner", lambda *a, **k: None, raising=False)
        yield mp
