"""What the Group API returns: received messages, staged and merged commits.

RFC 9420 §12.4.2 lets a member validate a Commit before it applies it; a client that
follows the delivery service's ordering (one commit per epoch, §14) stages each commit it
receives and merges the one the delivery service confirmed. Sent commits are staged the
same way (``Group.commit`` / ``Group.merge_pending_commit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.proposals import Proposal
from veil.core.mls.state import GroupState


@dataclass(frozen=True, slots=True)
class ApplicationMessage:
    sender: int
    data: bytes
    authenticated_data: bytes


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    sender: int
    ref: bytes
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class CommitApplied:
    committer: int
    epoch: int
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    removed_me: bool = False


class StagedCommit:
    """A received Commit, validated in full but not applied (RFC 9420 §12.4.2).

    :meth:`Group.process` returns one for every Commit, a member's or an external one.
    :meth:`Group.merge_staged` enters the epoch it leads to (once the delivery service
    confirmed this commit as the epoch's), :meth:`Group.discard_staged` drops it (the
    delivery service accepted another). Staging changes nothing in the group, so several
    commits for one epoch can be staged side by side; merging one makes the others, and
    a pending commit of our own, stale. The fields say what merging will do.
    """

    __slots__ = ("_base", "_next", "_status", "added", "committer", "epoch", "removed",
                 "removed_me")

    def __init__(self, base: GroupState, nxt: GroupState | None, committer: int,
                 added: list[int], removed: list[int]) -> None:
        # Both states are dropped once merged or discarded (two trees of O(n) each).
        self._base: GroupState | None = base
        self._next: GroupState | None = nxt
        self._status = "staged"
        self.committer = committer
        self.epoch = base.epoch + 1
        self.added = added
        self.removed = removed
        self.removed_me = nxt is None

    def __repr__(self) -> str:
        return (f"StagedCommit(committer={self.committer}, epoch={self.epoch}, "
                f"added={self.added}, removed={self.removed}, removed_me={self.removed_me}, "
                f"{self._status})")


Received = ApplicationMessage | ProposalReceived | StagedCommit
Processed = ApplicationMessage | ProposalReceived | CommitApplied


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a committer sends: the Commit to the group, the Welcome to new members."""

    commit: bytes
    welcome: bytes | None


__all__ = [
    "ApplicationMessage",
    "CommitApplied",
    "CommitResult",
    "Processed",
    "ProposalReceived",
    "Received",
    "StagedCommit",
]
