"""External joins: ExternalInit and commits by a new member (RFC 9420 §8.3, §12.4.3.2).

A client holding a GroupInfo with an ``external_pub`` extension joins by committing
itself: it exports the next epoch's init secret from an HPKE context to that key,
inserts its leaf as an Add would, and sends an UpdatePath. Members recover the same
init secret with the private key derived from their ``external_secret``.

A "resync" commit also removes the joiner's old leaf (§12.2: at most one Remove, and
the new leaf must meet the criteria of an Update for the removed leaf). Nothing but the
new leaf's own key signs an external commit, so a resync is accepted only when that key
is the removed leaf's signature key (the §12.4.3.2 security note: otherwise anyone
holding a GroupInfo could remove a member and take its place), and the credential
check must accept the new credential as a successor of the removed one. Every check on
public data runs before any state changes, on every member, the removed one included:
it alone cannot verify the confirmation tag (it cannot derive the new epoch), exactly as
for a member removed by an ordinary commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from veil.core.mls import keyschedule as ks
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import CipherSuite, get_suite, is_supported
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidCommit,
    InvalidProposal,
    InvalidWelcome,
    MlsSignatureError,
    UnsupportedCipherSuite,
)
from veil.core.mls.framing import sign_content
from veil.core.mls.group_ops import CommitOutcome, _advance, _copy_for_commit, resolve_psks
from veil.core.mls.leaf import (
    EXT_EXTERNAL_PUB,
    EXT_RATCHET_TREE,
    SOURCE_COMMIT,
    LeafNode,
    find_extension,
)
from veil.core.mls.messages import (
    SENDER_NEW_MEMBER_COMMIT,
    WF_PUBLIC,
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupInfo,
    Sender,
)
from veil.core.mls.proposal_ops import Applied
from veil.core.mls.proposals import (
    Commit,
    ExternalInit,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    Remove,
)
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.state import GroupState
from veil.core.mls.tree import RatchetTree
from veil.core.mls.treekem import (
    apply_new_path,
    apply_received_path,
    check_path_keys_fresh,
    decrypt_path,
    encrypt_path,
)
from veil.core.mls.validation import CredentialCheck, TreeIndex, validate_leaf_node
from veil.core.mls.welcome import validate_tree

EXPORT_LABEL = b"MLS 1.0 external init secret"


def _external_pub(gi: GroupInfo) -> bytes:
    data = find_extension(gi.extensions, EXT_EXTERNAL_PUB)
    if data is None:
        raise InvalidWelcome("GroupInfo has no external_pub extension")
    return decode_all(data, lambda r: r.opaque())


def verified_group_info(
    gi: GroupInfo,
    ratchet_tree: bytes | None,
    credential_check: CredentialCheck,
    *,
    now: int,
    check_tree_lifetimes: bool = True,
) -> tuple[CipherSuite, RatchetTree]:
    """Check a GroupInfo's signature and tree as a joiner must (RFC 9420 §12.4.3.1)."""
    ctx = gi.group_context
    if not is_supported(ctx.cipher_suite):
        raise UnsupportedCipherSuite(f"cipher suite {ctx.cipher_suite} is not supported")
    suite = get_suite(ctx.cipher_suite)
    data = find_extension(gi.extensions, EXT_RATCHET_TREE) or ratchet_tree
    if data is None:
        raise InvalidWelcome("no ratchet tree in the GroupInfo and none supplied")
    tree = RatchetTree.decode(suite, data)
    signer = tree.leaf(gi.signer)
    if signer is None or not suite.verify_with_label(
        signer.signature_key, b"GroupInfoTBS", gi.tbs(), gi.signature
    ):
        raise MlsSignatureError("GroupInfo signature does not verify")
    if tree.tree_hash() != ctx.tree_hash:
        raise InvalidWelcome("ratchet tree does not match the GroupInfo tree hash")
    validate_tree(suite, tree, ctx.group_id, ctx.extensions, credential_check, now=now,
                  check_lifetimes=check_tree_lifetimes)
    return suite, tree


def create_external_commit(
    gi: GroupInfo,
    leaf_template: LeafNode,
    sig_priv: bytes,
    *,
    ratchet_tree: bytes | None,
    resync_leaf: int | None,
    psk_ids: list[PreSharedKeyID],
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int,
    check_tree_lifetimes: bool = True,
    unique_credentials: bool = True,
    authenticated_data: bytes = b"",
) -> tuple[GroupState, AuthenticatedContent]:
    suite, tree = verified_group_info(gi, ratchet_tree, credential_check, now=now,
                                      check_tree_lifetimes=check_tree_lifetimes)
    ctx = gi.group_context
    kem_output, init_secret = suite.hpke_export_encap(_external_pub(gi), b"", EXPORT_LABEL,
                                                      suite.nh)
    # The joiner's "previous epoch" is what the GroupInfo tells; only its init secret
    # is replaced by the exported one.
    placeholder = ks.epoch_from_joiner(suite, bytes(suite.nh), None, ctx.encoded())
    old = GroupState(
        suite, ctx, tree,
        ks.interim_transcript_hash(suite, ctx.confirmed_transcript_hash, gi.confirmation_tag),
        gi.confirmation_tag, replace(placeholder, init_secret=init_secret),
        SecretTree(suite, placeholder.encryption_secret, tree.n_leaves), 0, sig_priv, {},
    )
    proposals: list[Proposal] = [ExternalInit(kem_output)]
    if resync_leaf is not None:
        proposals.append(Remove(resync_leaf))
    proposals += [PreSharedKey(p) for p in psk_ids]
    nxt = _copy_for_commit(old)
    _check_external_proposals(nxt.tree, proposals)
    # Refuse here what every member would refuse (same identity and key for a resync,
    # one leaf per credential), rather than send a commit that can only fail.
    check_joiner(nxt.tree, proposals, leaf_template, credential_check, unique_credentials)
    applied, me = _apply(nxt.tree, proposals, leaf_template)
    nxt.my_leaf = me
    psks = resolve_psks(old, applied.psks, external_psks)
    pending = apply_new_path(suite, nxt.tree, me, leaf_template, sig_priv, ctx.group_id)
    provisional = GroupContext(suite.suite_id, ctx.group_id, ctx.epoch + 1,
                               nxt.tree.tree_hash(), ctx.confirmed_transcript_hash,
                               list(ctx.extensions))
    path = encrypt_path(suite, nxt.tree, pending, provisional.encoded())
    for x, priv in pending.result.private_keys.items():
        node = nxt.tree.nodes[x]
        if node is not None:
            nxt.private_keys[x] = (node.encryption_key, priv)
    content = FramedContent(ctx.group_id, ctx.epoch, Sender(SENDER_NEW_MEMBER_COMMIT),
                            authenticated_data,
                            Commit([ProposalOrRef(p) for p in proposals], path))
    signature = sign_content(suite, sig_priv, WF_PUBLIC, content, ctx)
    new, tag = _advance(old, nxt, WF_PUBLIC, content, signature,
                        pending.result.commit_secret, psks, list(ctx.extensions))
    return new, AuthenticatedContent(WF_PUBLIC, content, FramedContentAuthData(signature, tag))


def _check_external_proposals(tree: RatchetTree, proposals: list[Proposal]) -> None:
    """RFC 9420 §12.2: one ExternalInit, at most one Remove (of a member), PSKs."""
    inits = [p for p in proposals if isinstance(p, ExternalInit)]
    removes = [p for p in proposals if isinstance(p, Remove)]
    if len(inits) != 1 or len(removes) > 1:
        raise InvalidProposal("external commit needs one ExternalInit and at most one Remove")
    for p in proposals:
        if not isinstance(p, ExternalInit | Remove | PreSharedKey):
            raise InvalidProposal("external commit carries a proposal it may not")
    for r in removes:
        if tree.leaf(r.removed) is None:
            raise InvalidProposal("external commit removes a blank or absent leaf")


def resynced_leaf(tree: RatchetTree, proposals: list[Proposal]) -> LeafNode | None:
    """The leaf a resync external commit removes (None for a plain external join)."""
    for p in proposals:
        if isinstance(p, Remove):
            return tree.leaf(p.removed)
    return None


def check_joiner(
    tree: RatchetTree, proposals: list[Proposal], new_leaf: LeafNode,
    credential_check: CredentialCheck | None, unique_credentials: bool = True,
) -> None:
    """Who may join by external commit, judged on the tree before the commit.

    A resync must come from the removed member itself: the same signature key (nothing
    else signs an external commit) and, when ``credential_check`` is given, a credential
    the application accepts as a successor of the removed one (receivers leave it to
    the full leaf validation). No joiner may duplicate a member's credential or key.
    """
    old = resynced_leaf(tree, proposals)
    if old is not None:
        if new_leaf.signature_key != old.signature_key:
            raise InvalidProposal("a resync must be signed with the removed member's key")
        if credential_check is not None and not credential_check(
                new_leaf.credential, new_leaf.signature_key, old.credential):
            raise CredentialRejected("resync credential is not a successor of the removed one")
    index = TreeIndex.of(tree, unique_credentials)
    if old is not None:
        index.forget(old)
    if index.has_signature_key(new_leaf.signature_key) or index.has_credential(
            new_leaf.credential):
        raise InvalidProposal("external joiner duplicates a member's credential or key")


def _apply(
    tree: RatchetTree, proposals: list[Proposal], new_leaf: LeafNode
) -> tuple[Applied, int]:
    """Removes, then the joiner's leaf where an Add would put it; returns its index."""
    out = _apply_removes(tree, proposals)
    return out, tree.add_leaf(new_leaf)


def _apply_removes(tree: RatchetTree, proposals: list[Proposal]) -> Applied:
    out = Applied()
    for p in proposals:
        if isinstance(p, Remove):
            tree.remove_leaf(p.removed)
            out.removed.append(p.removed)
            tree.truncate()
    out.psks = [p.psk for p in proposals if isinstance(p, PreSharedKey)]
    return out


def process_external_commit(
    state: GroupState,
    ac: AuthenticatedContent,
    *,
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int,
    unique_credentials: bool = True,
) -> CommitOutcome:
    """Validate and apply a commit sent by a joining non-member (RFC 9420 §12.4.3.2).

    Works on a copy: the caller's state is untouched unless this returns.
    """
    suite = state.suite
    commit = ac.content.content
    if not isinstance(commit, Commit) or commit.path is None:
        raise InvalidCommit("external commit without an UpdatePath")
    if ac.wire_format != WF_PUBLIC:
        raise InvalidCommit("external commit must be a PublicMessage")
    proposals: list[Proposal] = []
    for por in commit.proposals:
        if por.proposal is None:
            raise InvalidProposal("external commit may not refer to proposals")
        proposals.append(por.proposal)
    new_leaf = commit.path.leaf_node
    if new_leaf.leaf_node_source != SOURCE_COMMIT:
        raise InvalidCommit("external commit leaf source is not commit")
    _check_external_proposals(state.tree, proposals)
    # The signature is by the joiner's new leaf (RFC 9420 §6.1, new_member_commit).
    from veil.core.mls.framing import verify_content_signature

    verify_content_signature(suite, new_leaf.signature_key, ac, state.context)
    check_joiner(state.tree, proposals, new_leaf, None, unique_credentials)
    removed = resynced_leaf(state.tree, proposals)
    nxt = _copy_for_commit(state)
    applied = _apply_removes(nxt.tree, proposals)
    index = TreeIndex.of(nxt.tree, unique_credentials)
    # The leaf an Add would take (§12.4.3.2), known before the leaf enters the tree: its
    # signature covers the index, and the path keys are judged without it.
    committer = next((i for i in range(nxt.tree.n_leaves) if nxt.tree.leaf(i) is None),
                     nxt.tree.n_leaves)
    validate_leaf_node(
        suite, new_leaf, expected_source=SOURCE_COMMIT, group_id=state.group_id,
        leaf_index=committer, group_extensions=state.context.extensions, index=index,
        credential_check=credential_check, now=now, previous=removed,
    )
    check_path_keys_fresh(nxt.tree, commit.path)
    nxt.tree.add_leaf(new_leaf)
    kem_output = next(p.kem_output for p in proposals if isinstance(p, ExternalInit))
    external_priv = suite.derive_key_pair(state.secrets.external_secret).private
    init_secret = suite.hpke_export_decap(external_priv, kem_output, b"", EXPORT_LABEL,
                                          suite.nh)
    psks = resolve_psks(state, applied.psks, external_psks)
    fdp = apply_received_path(suite, nxt.tree, committer, commit.path, state.group_id)
    if state.my_leaf in applied.removed:
        # Everything public verified; only the members who stay can check the rest.
        return CommitOutcome(None, applied=applied)
    provisional = GroupContext(suite.suite_id, state.group_id, state.epoch + 1,
                               nxt.tree.tree_hash(), state.context.confirmed_transcript_hash,
                               list(state.context.extensions))
    result = decrypt_path(suite, nxt.tree, state.my_leaf, committer, commit.path, fdp,
                          nxt.private_key, provisional.encoded())
    for x, priv in result.private_keys.items():
        node = nxt.tree.nodes[x]
        if node is not None:
            nxt.private_keys[x] = (node.encryption_key, priv)
    old = replace(state, secrets=replace(state.secrets, init_secret=init_secret))
    new, _ = _advance(old, nxt, ac.wire_format, ac.content, ac.auth.signature,
                      result.commit_secret, psks, list(state.context.extensions))
    if ac.auth.confirmation_tag is None or not suite.verify_mac(
        new.secrets.confirmation_key, new.context.confirmed_transcript_hash,
        ac.auth.confirmation_tag,
    ):
        raise MlsSignatureError("commit confirmation tag does not verify")
    return CommitOutcome(new, applied=applied, committer=committer)

__all__ = [
    "check_joiner",
    "create_external_commit",
    "process_external_commit",
]
