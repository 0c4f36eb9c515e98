"""Proposal-list validation and application to the ratchet tree (RFC 9420 §12.1–§12.3).

Proposals are applied in the order the RFC fixes: GroupContextExtensions, Update,
Remove, Add, then PreSharedKey is collected. Validation keeps an index of keys in the
tree so that a Commit with k proposals costs O(k + n) once, not O(k·n).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import InvalidProposal, MissingCapability
from veil.core.mls.leaf import (
    SOURCE_UPDATE,
    Extension,
    KeyPackage,
    has_unique_extension_types,
)
from veil.core.mls.proposals import (
    PSK_EXTERNAL,
    PSK_RESUMPTION,
    RESUMPTION_APPLICATION,
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from veil.core.mls.tree import RatchetTree
from veil.core.mls.validation import (
    CredentialCheck,
    TreeIndex,
    required_capabilities,
    validate_key_package,
    validate_leaf_node,
)


@dataclass(frozen=True, slots=True)
class ProposalEntry:
    """A proposal with the leaf that sent it (``None``: the committer, inline)."""

    proposal: Proposal
    sender: int | None
    ref: bytes | None = None


@dataclass(slots=True)
class Applied:
    """What applying a proposal list did to the tree and the context."""

    added: list[tuple[int, KeyPackage]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    extensions: list[Extension] | None = None


def path_required(entries: list[ProposalEntry]) -> bool:
    """RFC 9420 §12.4: a path is required unless every proposal is Add, PSK or ReInit."""
    return not entries or any(
        not isinstance(e.proposal, Add | PreSharedKey | ReInit) for e in entries
    )


def validate_proposals(
    suite: CipherSuite,
    tree: RatchetTree,
    entries: list[ProposalEntry],
    *,
    committer: int,
    group_id: bytes,
    group_extensions: list[Extension],
    credential_check: CredentialCheck,
    now: int | None,
) -> None:
    """The proposal-list checks of RFC 9420 §12.2 for a regular (member) Commit."""
    index = TreeIndex.of(tree)
    touched: set[int] = set()
    psk_ids: set[bytes] = set()
    gce = [e for e in entries if isinstance(e.proposal, GroupContextExtensions)]
    if len(gce) > 1:
        raise InvalidProposal("more than one GroupContextExtensions proposal")
    extensions = group_extensions
    if gce:
        new_exts = gce[0].proposal.extensions  # type: ignore[union-attr]
        _check_group_extensions(tree, new_exts)
        extensions = new_exts
    for e in entries:
        p = e.proposal
        sender = committer if e.sender is None else e.sender
        if isinstance(p, ReInit | ExternalInit):
            raise InvalidProposal("ReInit and ExternalInit are not allowed in this commit")
        if isinstance(p, Update):
            if e.sender is None or sender == committer:
                raise InvalidProposal("the committer cannot include its own Update")
            if sender in touched:
                raise InvalidProposal("more than one Update or Remove for a leaf")
            touched.add(sender)
            old = tree.leaf(sender)
            if old is None:
                raise InvalidProposal("Update from a blank leaf")
            index.forget(old)
            validate_leaf_node(
                suite, p.leaf_node, expected_source=SOURCE_UPDATE, group_id=group_id,
                leaf_index=sender, group_extensions=extensions, index=index,
                credential_check=credential_check, now=now,
            )
            index.remember(p.leaf_node)
        elif isinstance(p, Remove):
            if p.removed == committer:
                raise InvalidProposal("the committer cannot remove itself")
            if p.removed in touched:
                raise InvalidProposal("more than one Update or Remove for a leaf")
            old = tree.leaf(p.removed)
            if old is None:
                raise InvalidProposal("Remove of a blank or absent leaf")
            touched.add(p.removed)
            index.forget(old)
        elif isinstance(p, PreSharedKey):
            key = _psk_key(p.psk)
            if key in psk_ids:
                raise InvalidProposal("duplicate PreSharedKey proposal")
            psk_ids.add(key)
            if p.psk.psktype == PSK_RESUMPTION and p.psk.usage != RESUMPTION_APPLICATION:
                raise InvalidProposal("resumption PSK usage must be application")
            if len(p.psk.psk_nonce) != suite.nh:
                raise InvalidProposal("PSK nonce has the wrong length")
    for e in entries:
        if isinstance(e.proposal, Add):
            kp = e.proposal.key_package
            validate_key_package(
                suite, kp, group_extensions=extensions, index=index,
                credential_check=credential_check, now=now,
            )
            index.remember(kp.leaf_node)


def _psk_key(psk: PreSharedKeyID) -> bytes:
    from veil.core.mls.codec import Writer

    w = Writer()
    w.u8(psk.psktype)
    w.opaque(psk.psk_id)
    w.opaque(psk.psk_group_id)
    w.u64(psk.psk_epoch)
    return w.bytes()


def _check_group_extensions(tree: RatchetTree, exts: list[Extension]) -> None:
    if not has_unique_extension_types(exts):
        raise InvalidProposal("GroupContextExtensions repeats an extension type")
    required = required_capabilities(exts)
    for _, leaf in tree.members():
        caps = leaf.capabilities
        if required is not None and not required.satisfied_by(caps):
            raise MissingCapability("a member lacks a newly required capability")
        for ext in exts:
            if not caps.supports_extension(ext.extension_type):
                raise MissingCapability("a member does not support a new group extension")


def apply_proposals(tree: RatchetTree, entries: list[ProposalEntry]) -> Applied:
    """Apply a validated proposal list to ``tree`` in RFC 9420 §12.3 order."""
    out = Applied()
    for e in entries:
        if isinstance(e.proposal, GroupContextExtensions):
            out.extensions = list(e.proposal.extensions)
    for e in entries:
        p = e.proposal
        if isinstance(p, Update):
            if e.sender is None:
                raise InvalidProposal("Update without a sender")
            tree.set_leaf(e.sender, p.leaf_node)
            tree.blank_path(e.sender)
            out.updated.append(e.sender)
    for e in entries:
        p = e.proposal
        if isinstance(p, Remove):
            if tree.leaf(p.removed) is None:
                raise InvalidProposal("Remove of a blank or absent leaf")
            tree.remove_leaf(p.removed)
            out.removed.append(p.removed)
            tree.truncate()
    start = 0
    for e in entries:
        p = e.proposal
        if isinstance(p, Add):
            index = tree.add_leaf(p.key_package.leaf_node, start)
            start = index + 1
            out.added.append((index, p.key_package))
    for e in entries:
        if isinstance(e.proposal, PreSharedKey):
            out.psks.append(e.proposal.psk)
    return out


def decode_group_extensions(data: bytes) -> list[Extension]:
    from veil.core.mls.leaf import read_extensions

    return decode_all(data, read_extensions)


__all__ = [
    "PSK_EXTERNAL",
    "Applied",
    "ProposalEntry",
    "apply_proposals",
    "path_required",
    "validate_proposals",
]
