"""A member's complete group state for one epoch, and its serialisation.

The state is what RFC 9420 §8 and §12 say a member keeps: group context, public ratchet
tree, transcript hashes, epoch secrets, the secret tree, its own leaf, signing key and
the HPKE private keys it holds in the tree, and proposals received in this epoch.

Serialised form (versioned, decoded strictly): ``u8 version`` followed by the fields
in :meth:`GroupState.write` order. It contains secrets: store it only encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.core.mls.codec import Reader, Writer, decode_all
from veil.core.mls.crypto import CipherSuite, get_suite, is_supported
from veil.core.mls.errors import InvalidState, MlsDecodeError
from veil.core.mls.keyschedule import EpochSecrets
from veil.core.mls.messages import AuthenticatedContent, GroupContext
from veil.core.mls.proposals import Proposal
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.tree import RatchetTree, read_ratchet_tree_nodes, write_ratchet_tree_nodes

STATE_VERSION = 1
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

    # -- serialisation ------------------------------------------------------------

    def write(self, w: Writer) -> None:
        w.u8(STATE_VERSION)
        w.u16(self.suite.suite_id)
        self.context.write(w)
        write_ratchet_tree_nodes(w, self.tree.nodes)
        w.opaque(self.interim_transcript_hash)
        w.opaque(self.confirmation_tag)
        for name in EpochSecrets.__slots__:
            w.opaque(getattr(self.secrets, name))
        self.secret_tree.write(w)
        w.u32(self.my_leaf)
        w.opaque(self.sig_priv)
        w.u32(len(self.private_keys))
        for x, (pub, key) in sorted(self.private_keys.items()):
            w.u32(x)
            w.opaque(pub)
            w.opaque(key)
        w.u32(len(self.pending_leaf_keys))
        for pub, key in sorted(self.pending_leaf_keys.items()):
            w.opaque(pub)
            w.opaque(key)
        w.vector(list(self.proposals.values()), lambda ww, c: c.content.write(ww))
        w.u32(len(self.resumption_psks))
        for epoch, psk in sorted(self.resumption_psks.items()):
            w.u64(epoch)
            w.opaque(psk)

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()

    @staticmethod
    def decode(data: bytes) -> GroupState:
        try:
            return decode_all(data, _read_state)
        except MlsDecodeError as exc:
            raise InvalidState(f"group state does not restore: {exc}") from None


def _read_state(r: Reader) -> GroupState:
    from veil.core.mls.group_ops import proposal_ref

    if r.u8() != STATE_VERSION:
        raise MlsDecodeError("unknown group state version")
    suite_id = r.u16()
    if not is_supported(suite_id):
        raise MlsDecodeError("unsupported cipher suite in group state")
    suite = get_suite(suite_id)
    context = GroupContext.read(r)
    nodes = read_ratchet_tree_nodes(r)
    width = len(nodes)
    if width == 0 or (width + 1) & width != 0:
        raise MlsDecodeError("group state tree has an invalid width")
    tree = RatchetTree(suite, nodes)
    interim = r.opaque()
    tag = r.opaque()
    secrets = EpochSecrets(*(r.opaque() for _ in EpochSecrets.__slots__))
    secret_tree = SecretTree.read(r, suite)
    my_leaf = r.u32()
    sig_priv = r.opaque()
    keys: dict[int, tuple[bytes, bytes]] = {}
    for _ in range(r.u32()):
        x = r.u32()
        keys[x] = (r.opaque(), r.opaque())
    pending: dict[bytes, bytes] = {}
    for _ in range(r.u32()):
        pub = r.opaque()
        pending[pub] = r.opaque()
    state = GroupState(suite, context, tree, interim, tag, secrets, secret_tree, my_leaf,
                       sig_priv, keys, pending)
    for ac in r.vector(AuthenticatedContent.read):
        body = ac.content.content
        if isinstance(body, bytes) or not hasattr(body, "proposal_type"):
            raise MlsDecodeError("cached proposal is not a proposal")
        state.proposals[proposal_ref(suite, ac)] = CachedProposal(
            proposal_ref(suite, ac), body, ac  # type: ignore[arg-type]
        )
    for _ in range(r.u32()):
        epoch = r.u64()
        state.resumption_psks[epoch] = r.opaque()
    if tree.leaf(my_leaf) is None:
        raise MlsDecodeError("group state's own leaf is blank")
    return state
