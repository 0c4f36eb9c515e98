"""A member's complete group state for one epoch.

The state is what RFC 9420 §8 and §12 say a member keeps: group context, public ratchet
tree, transcript hashes, epoch secrets, the secret tree, its own leaf, signing key and
the HPKE private keys it holds in the tree, and proposals received in this epoch.
``persist`` saves it in a slow part (everything but the secret tree) and a hot part
(the secret tree, §9), so that one message rewrites only the hot part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import InvalidState
from veil.core.mls.keyschedule import EpochSecrets
from veil.core.mls.messages import AuthenticatedContent, GroupContext
from veil.core.mls.proposals import Proposal
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.tree import RatchetTree

# Version 1: one blob holding everything (up to commit 2ed2fe2). Version 2: slow and hot
# parts (``persist``). A version-1 blob is read only by ``Group.restore_legacy``.
LEGACY_VERSION = 1
STATE_VERSION = 2
MAX_CACHED_PROPOSALS = 4096
MAX_RESUMPTION_PSKS = 16


@dataclass(slots=True)
class CachedProposal:
    """A proposal received (or sent) in the current epoch, kept by its ProposalRef."""

    ref: bytes
    proposal: Proposal
    content: AuthenticatedContent

    @property
    def sender(self) -> int:
        return self.content.content.sender.index

    @property
    def sender_type(self) -> int:
        return self.content.content.sender.sender_type


@dataclass(slots=True)
class GroupState:
    suite: CipherSuite
    context: GroupContext
    tree: RatchetTree
    interim_transcript_hash: bytes
    confirmation_tag: bytes
    secrets: EpochSecrets
    secret_tree: SecretTree
    my_leaf: int
    sig_priv: bytes
    # node index -> (HPKE public key, private key) this member holds in the tree
    private_keys: dict[int, tuple[bytes, bytes]]
    # encryption key -> private key of leaves proposed in our own Update proposals
    pending_leaf_keys: dict[bytes, bytes] = field(default_factory=dict)
    proposals: dict[bytes, CachedProposal] = field(default_factory=dict)
    resumption_psks: dict[int, bytes] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return self.context.epoch

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    def remember_resumption_psk(self) -> None:
        self.resumption_psks[self.epoch] = self.secrets.resumption_psk
        while len(self.resumption_psks) > MAX_RESUMPTION_PSKS:
            del self.resumption_psks[min(self.resumption_psks)]

    def private_key(self, x: int) -> bytes | None:
        held = self.private_keys.get(x)
        node = self.tree.nodes[x] if x < len(self.tree.nodes) else None
        if held is None or node is None or node.encryption_key != held[0]:
            return None
        return held[1]

    def prune_private_keys(self) -> None:
        self.private_keys = {
            x: held for x, held in self.private_keys.items() if self.private_key(x) is not None
        }

    def cache_proposal(self, cached: CachedProposal) -> None:
        if len(self.proposals) >= MAX_CACHED_PROPOSALS:
            raise InvalidState("too many pending proposals in this epoch")
        self.proposals[cached.ref] = cached

    # -- serialisation (``persist``) ---------------------------------------------------

    # Writing needs the Group's configuration: ``Group.save`` / ``Group.serialize``.

    @staticmethod
    def decode(data: bytes) -> GroupState:
        """A single blob of either version (``Group.serialize``, or a version-1 state)."""
        from veil.core.mls.persist import decode_any

        return decode_any(data)

__all__ = [
    "LEGACY_VERSION",
    "STATE_VERSION",
    "CachedProposal",
    "GroupState",
]
