"""A member's saved group state: a slow part per epoch, a hot part per message.

RFC 9420 fixes what a member keeps (§8 key schedule, §9 secret tree, §12 group state)
but not how it is stored. A group of 10,000 members has a ratchet tree of megabytes,
yet one application message changes only the sender's ratchet in the secret tree
(§9.1), so the state is saved in two parts:

* **slow** (changes per epoch, or when a proposal is cached): configuration, group
  context, ratchet tree, transcript hashes, the epoch secrets still used after the
  epoch began, own leaf, signing key, HPKE private keys, pending Update keys, cached
  proposals, resumption PSKs;
* **hot** (changes per message): the secret tree (§9): the node secrets not yet used,
  and per sender with state in this epoch its handshake and application ratchets
  (generation, chain secret, retained out-of-order keys, §9.4). Its size is
  O(senders · log n), not O(n).

The hot part names the slow part it belongs to: the epoch in clear and a 16-byte
binding, a hash of group id, epoch, own leaf and confirmation tag (which differs
between competing commits for one epoch). A hot part from another group, member or
epoch is refused with :class:`StateMismatch`.

The slow part leaves out the epoch secrets that the deletion schedule (§9.2) wants gone
once the epoch began (``encryption_secret``, the root of the secret tree, and
``joiner_secret``, ``welcome_secret``, ``epoch_secret``): a slow part, which is written
rarely and may live long, must not let its reader decrypt the epoch's messages.

Formats (strict decoding, ``codec``; every part starts ``u8 version, u8 kind``):

    slow   2, 1, u16 suite, u32 options, GroupContext, opaque tree (vector of
           optional<Node>, full width), opaque interim transcript hash, opaque
           confirmation tag, 8 x opaque epoch secret (KEPT_SECRETS order), u32 own
           leaf, opaque signature key, u32 n + n x (u32 node, opaque pub, opaque priv),
           u32 n + n x (opaque pub, opaque priv), vector AuthenticatedContent
           (proposals), u32 n + n x (u64 epoch, opaque resumption psk)
    hot    2, 2, u64 epoch, opaque binding, u32 leaves, u32 n + n x (u32 node, opaque
           secret), u32 n + n x (u32 leaf, u8 kind, opaque secret, u32 generation,
           u32 k + k x (u32 generation, opaque key, opaque nonce))
    single 2, 3, opaque slow, opaque hot            (``Group.serialize``)
    v1     1, the old single blob (``Group.restore_legacy`` reads it)

``options`` is a bit set (:data:`OPTION_BITS`); a bit this version does not know is
refused rather than ignored, since every option changes what the group accepts or
sends. All parts hold secrets: store them only encrypted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from veil.core.mls.codec import Reader, Writer, decode_all
from veil.core.mls.crypto import CipherSuite, get_suite, is_supported
from veil.core.mls.errors import (
    ConfigMismatch,
    InvalidState,
    MlsDecodeError,
    StateMismatch,
    UnsupportedStateVersion,
)
from veil.core.mls.keyschedule import EpochSecrets
from veil.core.mls.messages import AuthenticatedContent, GroupContext
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.state import LEGACY_VERSION, STATE_VERSION, CachedProposal, GroupState
from veil.core.mls.tree import RatchetTree, read_ratchet_tree_nodes

T = TypeVar("T")

KIND_SLOW = 1
KIND_HOT = 2
KIND_SINGLE = 3
_KIND_NAMES = {KIND_SLOW: "slow part", KIND_HOT: "hot part", KIND_SINGLE: "single blob"}
BINDING_LEN = 16

# The epoch secrets a member still needs once the epoch began; the others are never
# written (see the module docstring) and read back as empty.
KEPT_SECRETS = (
    "sender_data_secret", "exporter_secret", "external_secret", "confirmation_key",
    "membership_key", "resumption_psk", "epoch_authenticator", "init_secret",
)

OPTION_BITS = {"private_handshakes": 1, "unique_credentials": 2, "keep_previous_epoch": 4}
_ALL_OPTIONS = sum(OPTION_BITS.values())


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """The Group options that change behaviour, saved with the slow part.

    ``private_handshakes``: proposals and commits as PrivateMessage (RFC 9420 §6.3);
    ``unique_credentials``: one leaf per credential (§12.2); ``keep_previous_epoch``:
    application messages of the epoch that just ended still decrypt, in memory only.
    The credential check and external PSKs are code and secrets of the application and
    are passed again on restore.
    """

    private_handshakes: bool = False
    unique_credentials: bool = True
    keep_previous_epoch: bool = True

    def options(self) -> int:
        return sum(bit for name, bit in OPTION_BITS.items() if getattr(self, name))

    @staticmethod
    def from_options(options: int) -> GroupConfig:
        if options & ~_ALL_OPTIONS:
            raise UnsupportedStateVersion("saved state sets options this version does not know")
        return GroupConfig(**{name: bool(options & bit) for name, bit in OPTION_BITS.items()})

    def with_explicit(self, **explicit: bool | None) -> GroupConfig:
        """This configuration, checked against what a caller passed (None: not passed)."""
        for name, value in explicit.items():
            if value is not None and value != getattr(self, name):
                raise ConfigMismatch(f"saved state has {name}={getattr(self, name)}, "
                                     f"restore was given {value}")
        return self


@dataclass(frozen=True, slots=True)
class SavedGroup:
    """Both parts of a saved member state (``Group.save``); store each encrypted."""

    slow: bytes
    hot: bytes


def binding(state: GroupState) -> bytes:
    """What ties a hot part to its slow part: group, epoch, own leaf, and which commit."""
    w = Writer()
    w.opaque(b"veil mls hot state")
    w.opaque(state.group_id)
    w.u64(state.epoch)
    w.u32(state.my_leaf)
    w.opaque(state.confirmation_tag)
    return state.suite.hash(w.bytes())[:BINDING_LEN]


# -- writing ----------------------------------------------------------------------------


def encode_slow(state: GroupState, config: GroupConfig) -> bytes:
    w = Writer()
    w.u8(STATE_VERSION)
    w.u8(KIND_SLOW)
    w.u16(state.suite.suite_id)
    w.u32(config.options())
    state.context.write(w)
    # Full width from the tree's per-node encoding cache: no re-serialisation of leaves.
    w.raw(state.tree.encode_nodes())
    w.opaque(state.interim_transcript_hash)
    w.opaque(state.confirmation_tag)
    for name in KEPT_SECRETS:
        w.opaque(getattr(state.secrets, name))
    write_member(w, state)
    return w.bytes()


def encode_hot(state: GroupState) -> bytes:
    w = Writer()
    w.u8(STATE_VERSION)
    w.u8(KIND_HOT)
    w.u64(state.epoch)
    w.opaque(binding(state))
    state.secret_tree.write(w)
    return w.bytes()


def encode_single(state: GroupState, config: GroupConfig) -> bytes:
    w = Writer()
    w.u8(STATE_VERSION)
    w.u8(KIND_SINGLE)
    w.opaque(encode_slow(state, config))
    w.opaque(encode_hot(state))
    return w.bytes()


def write_member(w: Writer, state: GroupState) -> None:
    """The fields after the epoch secrets, the same in version 1 and 2."""
    w.u32(state.my_leaf)
    w.opaque(state.sig_priv)
    w.u32(len(state.private_keys))
    for x, (pub, key) in sorted(state.private_keys.items()):
        w.u32(x)
        w.opaque(pub)
        w.opaque(key)
    w.u32(len(state.pending_leaf_keys))
    for pub, key in sorted(state.pending_leaf_keys.items()):
        w.opaque(pub)
        w.opaque(key)
    w.vector(list(state.proposals.values()), lambda ww, c: c.content.write(ww))
    w.u32(len(state.resumption_psks))
    for epoch, psk in sorted(state.resumption_psks.items()):
        w.u64(epoch)
        w.opaque(psk)


# -- reading ----------------------------------------------------------------------------


def decode_parts(slow: bytes, hot: bytes) -> tuple[GroupState, GroupConfig]:
    """A state from its two parts; the hot part must belong to the slow part."""
    state, config = _decode(slow, _read_slow)
    tree = _decode(hot, lambda r: _read_hot(r, state))
    state.secret_tree = tree
    return state, config


def decode_single(data: bytes) -> tuple[GroupState, GroupConfig]:
    """A state saved as one blob by ``Group.serialize``."""
    slow, hot = _decode(data, _read_single)
    return decode_parts(slow, hot)


def decode_legacy(data: bytes) -> GroupState:
    """A version-1 single blob (no configuration in it, the secret tree inside)."""
    return _decode(data, _read_v1)


def decode_any(data: bytes) -> GroupState:
    """A single blob of either version, for tools that only look at the state."""
    if data[:1] == bytes((LEGACY_VERSION,)):
        return decode_legacy(data)
    return decode_single(data)[0]


def _decode(data: bytes, read: Callable[[Reader], T]) -> T:
    try:
        return decode_all(data, read)
    except MlsDecodeError as exc:
        raise InvalidState(f"group state does not restore: {exc}") from None


def _header(r: Reader, kind: int) -> None:
    version = r.u8()
    if version == LEGACY_VERSION:
        raise UnsupportedStateVersion("version-1 group state: read it with Group.restore_legacy")
    if version != STATE_VERSION:
        raise UnsupportedStateVersion(f"group state version {version} is not supported")
    got = r.u8()
    if got != kind:
        raise StateMismatch(f"expected the {_KIND_NAMES[kind]}, "
                            f"got {_KIND_NAMES.get(got, f'kind {got}')}")


def _read_single(r: Reader) -> tuple[bytes, bytes]:
    _header(r, KIND_SINGLE)
    return r.opaque(), r.opaque()


def _read_suite(r: Reader) -> CipherSuite:
    suite_id = r.u16()
    if not is_supported(suite_id):
        raise MlsDecodeError("unsupported cipher suite in group state")
    return get_suite(suite_id)


def _read_tree(r: Reader, suite: CipherSuite) -> RatchetTree:
    nodes = read_ratchet_tree_nodes(r)
    width = len(nodes)
    if width == 0 or (width + 1) & width != 0:
        raise MlsDecodeError("group state tree has an invalid width")
    return RatchetTree(suite, nodes)


def _read_slow(r: Reader) -> tuple[GroupState, GroupConfig]:
    _header(r, KIND_SLOW)
    suite = _read_suite(r)
    config = GroupConfig.from_options(r.u32())
    context = GroupContext.read(r)
    if context.cipher_suite != suite.suite_id:
        raise MlsDecodeError("group context cipher suite differs from the state's")
    tree = _read_tree(r, suite)
    interim = r.opaque()
    tag = r.opaque()
    kept = {name: r.opaque() for name in KEPT_SECRETS}
    secrets = EpochSecrets(**{name: kept.get(name, b"") for name in EpochSecrets.__slots__})
    # The secret tree comes from the hot part; this placeholder is replaced.
    state = _read_member(r, suite, context, tree, interim, tag, secrets,
                         SecretTree(suite, b"", tree.n_leaves))
    return state, config


def _read_hot(r: Reader, state: GroupState) -> SecretTree:
    _header(r, KIND_HOT)
    epoch = r.u64()
    if epoch != state.epoch:
        raise StateMismatch(f"hot part is for epoch {epoch}, slow part for epoch {state.epoch}")
    if r.opaque() != binding(state):
        raise StateMismatch("hot part belongs to another group, member or commit")
    tree = SecretTree.read(r, state.suite)
    if not tree.fits(state.tree.n_leaves):
        raise MlsDecodeError("hot part's secret tree does not fit the ratchet tree")
    return tree


def _read_v1(r: Reader) -> GroupState:
    if r.u8() != LEGACY_VERSION:
        raise UnsupportedStateVersion("not a version-1 group state: read it with Group.restore")
    suite = _read_suite(r)
    context = GroupContext.read(r)
    tree = _read_tree(r, suite)
    interim = r.opaque()
    tag = r.opaque()
    secrets = EpochSecrets(*(r.opaque() for _ in EpochSecrets.__slots__))
    secret_tree = SecretTree.read(r, suite)
    if not secret_tree.fits(tree.n_leaves):
        raise MlsDecodeError("group state's secret tree does not fit the ratchet tree")
    state = _read_member(r, suite, context, tree, interim, tag, secrets, secret_tree)
    # Version 1 kept every epoch secret; drop those version 2 never writes.
    state.secrets = replace(secrets, joiner_secret=b"", welcome_secret=b"", epoch_secret=b"",
                            encryption_secret=b"")
    return state


def _read_member(
    r: Reader, suite: CipherSuite, context: GroupContext, tree: RatchetTree, interim: bytes,
    tag: bytes, secrets: EpochSecrets, secret_tree: SecretTree,
) -> GroupState:
    from veil.core.mls.group_ops import proposal_ref

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
        ref = proposal_ref(suite, ac)
        state.proposals[ref] = CachedProposal(ref, body, ac)  # type: ignore[arg-type]
    for _ in range(r.u32()):
        epoch = r.u64()
        state.resumption_psks[epoch] = r.opaque()
    if tree.leaf(my_leaf) is None:
        raise MlsDecodeError("group state's own leaf is blank")
    return state


__all__ = [
    "STATE_VERSION",
    "GroupConfig",
    "SavedGroup",
    "decode_any",
    "decode_legacy",
    "decode_parts",
    "decode_single",
    "encode_hot",
    "encode_single",
    "encode_slow",
]
