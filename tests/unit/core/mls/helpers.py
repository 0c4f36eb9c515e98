"""Builders shared by the MLS unit tests."""

from __future__ import annotations

from veil.core.mls.group import Group
from veil.core.mls.leaf import Credential
from veil.core.mls.welcome import KeyPackageBundle

NOW = 1_800_000_000


def bundle(name: str, suite: int = 1) -> KeyPackageBundle:
    return Group.key_package(suite, Credential.basic(name.encode()), now=NOW)


def make_group(n: int, suite: int = 1, private_handshakes: bool = False) -> list[Group]:
    """A creator plus ``n - 1`` members added in one commit; all at epoch 1."""
    creator = Group.create(suite, Credential.basic(b"m0"), now=NOW,
                           private_handshakes=private_handshakes)
    bundles = [bundle(f"m{i}", suite) for i in range(1, n)]
    members = [creator]
    if bundles:
        out = creator.commit(add=[b.key_package.encoded() for b in bundles], now=NOW)
        creator.merge_pending_commit()
        assert out.welcome is not None
        members += [Group.join(out.welcome, b, private_handshakes=private_handshakes)
                    for b in bundles]
    return members


def deliver(commit: bytes, groups: list[Group]) -> None:
    for g in groups:
        g.process(commit, now=NOW)


def same_epoch(groups: list[Group]) -> bool:
    return len({g.epoch_authenticator for g in groups}) == 1 and len(
        {g.epoch for g in groups}) == 1
