"""Proposal-list validation, selection and application (RFC 9420 §12.1–§12.3).

Proposals are applied in the order the RFC fixes: GroupContextExtensions, Update,
Remove, Add, then PreSharedKey is collected. Validation keeps an index of keys in the
tree so that a Commit with k proposals costs O(k + n) once, not O(k·n). Receivers
refuse a Commit whose list is invalid (§12.2); a committer instead leaves out the
cached proposals that would make it so (:func:`select_proposals`), so that no member
can stop everyone's commits by proposing junk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import InvalidProposal, MissingCapability, MlsError
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


class ProposalChecker:
    """Incremental proposal-list validation (RFC 9420 §12.2) for a regular Commit.

    Each :meth:`check` validates one proposal against the tree and the proposals accepted
    before it, then records its effect; a proposal that fails raises and leaves the
    checker as it was, so a committer can drop it and go on. Proposals must be checked
    by kind in :data:`CHECK_ORDER` (the §12.3 application order, Removes before
    Updates): within a kind the outcome then does not depend on the order, so the list a
    committer keeps passes a receiver's check in whatever order the Commit lists it.
    """

    def __init__(
        self,
        suite: CipherSuite,
        tree: RatchetTree,
        *,
        committer: int,
        group_id: bytes,
        group_extensions: list[Extension],
        credential_check: CredentialCheck,
        now: int,
        unique_credentials: bool = True,
    ) -> None:
        self.suite = suite
        self.tree = tree
        self.committer = committer
        self.group_id = group_id
        self.extensions = group_extensions
        self.credential_check = credential_check
        self.now = now
        self.index = TreeIndex.of(tree, unique_credentials)
        self.touched: set[int] = set()
        self.psk_ids: set[bytes] = set()
        self.has_gce = False

    def check(self, e: ProposalEntry) -> None:
        p = e.proposal
        if isinstance(p, GroupContextExtensions):
            if self.has_gce:
                raise InvalidProposal("more than one GroupContextExtensions proposal")
            _check_group_extensions(self.tree, p.extensions)
            self.has_gce = True
            self.extensions = p.extensions
        elif isinstance(p, Remove):
            self._check_remove(p)
        elif isinstance(p, Update):
            self._check_update(p, e.sender)
        elif isinstance(p, Add):
            validate_key_package(
                self.suite, p.key_package, group_extensions=self.extensions,
                index=self.index, credential_check=self.credential_check, now=self.now,
            )
            self.index.remember(p.key_package.leaf_node)
        elif isinstance(p, PreSharedKey):
            self._check_psk(p)
        else:
            raise InvalidProposal("ReInit and ExternalInit are not allowed in this commit")

    def _check_remove(self, p: Remove) -> None:
        if p.removed == self.committer:
            raise InvalidProposal("the committer cannot remove itself")
        if p.removed in self.touched:
            raise InvalidProposal("more than one Update or Remove for a leaf")
        old = self.tree.leaf(p.removed)
        if old is None:
            raise InvalidProposal("Remove of a blank or absent leaf")
        self.touched.add(p.removed)
        self.index.forget(old)

    def _check_update(self, p: Update, sender: int | None) -> None:
        if sender is None or sender == self.committer:
            raise InvalidProposal("the committer cannot include its own Update")
        if sender in self.touched:
            raise InvalidProposal("more than one Update or Remove for a leaf")
        old = self.tree.leaf(sender)
        if old is None:
            raise InvalidProposal("Update from a blank leaf")
        # The old leaf is set aside only while its successor is judged: it may keep its
        # own signature key and credential, but never anyone else's, and its old keys
        # stay taken for the proposals after it (so their order does not matter).
        self.index.forget(old)
        try:
            validate_leaf_node(
                self.suite, p.leaf_node, expected_source=SOURCE_UPDATE,
                group_id=self.group_id, leaf_index=sender, group_extensions=self.extensions,
                index=self.index, credential_check=self.credential_check, now=self.now,
                previous=old,
            )
        finally:
            self.index.unforget(old)
        self.touched.add(sender)
        self.index.remember(p.leaf_node)

    def _check_psk(self, p: PreSharedKey) -> None:
        key = _psk_key(p.psk)
        if key in self.psk_ids:
            raise InvalidProposal("duplicate PreSharedKey proposal")
        if p.psk.psktype == PSK_RESUMPTION and p.psk.usage != RESUMPTION_APPLICATION:
            raise InvalidProposal("resumption PSK usage must be application")
        if len(p.psk.psk_nonce) != self.suite.nh:
            raise InvalidProposal("PSK nonce has the wrong length")
        self.psk_ids.add(key)


CHECK_ORDER: tuple[type, ...] = (GroupContextExtensions, Remove, Update, Add, PreSharedKey)


def _kind(e: ProposalEntry) -> int:
    for i, t in enumerate(CHECK_ORDER):
        if isinstance(e.proposal, t):
            return i
    return -1


def validate_proposals(
    suite: CipherSuite,
    tree: RatchetTree,
    entries: list[ProposalEntry],
    *,
    committer: int,
    group_id: bytes,
    group_extensions: list[Extension],
    credential_check: CredentialCheck,
    now: int,
    unique_credentials: bool = True,
) -> None:
    """The proposal-list checks of RFC 9420 §12.2 for a received (member) Commit."""
    checker = ProposalChecker(
        suite, tree, committer=committer, group_id=group_id,
        group_extensions=group_extensions, credential_check=credential_check, now=now,
        unique_credentials=unique_credentials,
    )
    kinds = [_kind(e) for e in entries]
    if -1 in kinds:
        raise InvalidProposal("ReInit and ExternalInit are not allowed in this commit")
    for kind in range(len(CHECK_ORDER)):
        for e, k in zip(entries, kinds, strict=True):
            if k == kind:
                checker.check(e)


def select_proposals(
    suite: CipherSuite,
    tree: RatchetTree,
    *,
    inline: list[ProposalEntry],
    cached: list[ProposalEntry],
    committer: int,
    group_id: bytes,
    group_extensions: list[Extension],
    credential_check: CredentialCheck,
    now: int,
    psk_available: Callable[[PreSharedKeyID], bool],
    unique_credentials: bool = True,
) -> list[ProposalEntry]:
    """The proposals a committer commits: every ``inline`` one (the caller's own: an
    invalid one raises) and the cached ones that keep the list valid (RFC 9420 §12.2).

    Any member can cache proposals for everyone's next commit, so a cached proposal that
    is invalid, or invalid together with another, is left out rather than allowed to
    stop the commit: ReInit (not implemented, and §12.2 prefers other proposals over
    it), an Update of a leaf also removed (§12.2 prefers the Remove), an older Update of
    a leaf that sent a newer one, duplicates, a second GroupContextExtensions, PSKs this
    member does not hold, and anything failing validation (expired KeyPackages, reused
    keys, renames). The result passes :func:`validate_proposals`, which receivers run.
    Cached entries come first, in the order received, then the inline ones.
    """
    if any(_kind(e) == -1 for e in inline):
        raise InvalidProposal("ReInit and ExternalInit are not allowed in this commit")
    gces = [e for e in cached if isinstance(e.proposal, GroupContextExtensions)]
    try:
        return _select(suite, tree, inline, cached, committer, group_id, group_extensions,
                       credential_check, now, psk_available, unique_credentials,
                       allow_cached_gce=True)
    except MlsError:
        if not gces:
            raise
    # A cached GroupContextExtensions may be what makes the caller's own Adds invalid
    # (a new required capability): the caller's explicit request wins.
    return _select(suite, tree, inline, cached, committer, group_id, group_extensions,
                   credential_check, now, psk_available, unique_credentials,
                   allow_cached_gce=False)


def _select(
    suite: CipherSuite,
    tree: RatchetTree,
    inline: list[ProposalEntry],
    cached: list[ProposalEntry],
    committer: int,
    group_id: bytes,
    group_extensions: list[Extension],
    credential_check: CredentialCheck,
    now: int,
    psk_available: Callable[[PreSharedKeyID], bool],
    unique_credentials: bool,
    *,
    allow_cached_gce: bool,
) -> list[ProposalEntry]:
    checker = ProposalChecker(
        suite, tree, committer=committer, group_id=group_id,
        group_extensions=group_extensions, credential_check=credential_check, now=now,
        unique_credentials=unique_credentials,
    )
    kept: set[int] = set()
    for kind, t in enumerate(CHECK_ORDER):
        for e in inline:
            if _kind(e) == kind:
                checker.check(e)
        candidates = [i for i, e in enumerate(cached) if _kind(e) == kind]
        if t is Update or t is GroupContextExtensions:
            # the most recent Update of a leaf (§12.2), the most recent extensions
            candidates.reverse()
        if t is GroupContextExtensions and (checker.has_gce or not allow_cached_gce):
            continue
        for i in candidates:
            e = cached[i]
            if isinstance(e.proposal, PreSharedKey) and not psk_available(e.proposal.psk):
                continue
            try:
                checker.check(e)
            except MlsError:
                continue
            kept.add(i)
    return [e for i, e in enumerate(cached) if i in kept] + list(inline)


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
    "ProposalChecker",
    "ProposalEntry",
    "apply_proposals",
    "path_required",
    "select_proposals",
    "validate_proposals",
]
