"""External joins: ExternalInit and commits by a new member (RFC 9420 §8.3, §12.4.3.2).

A client holding a GroupInfo with an ``external_pub`` extension joins by committing
itself: it exports the next epoch's init secret from an HPKE context to that key,
inserts its leaf as an Add would, and sends an UpdatePath. Members recover the same
init secret with the private key derived from their ``external_secret``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from veil.core.mls import keyschedule as ks
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import CipherSuite, get_suite, is_supported
from veil.core.mls.errors import (
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
from veil.core.mls.treekem import apply_new_path, apply_received_path, decrypt_path, encrypt_path
from veil.core.mls.validation import CredentialCheck, TreeIndex, validate_leaf_node
from veil.core.mls.welcome import validate_tree

EXPORT_LABEL = b"MLS 1.0 external init secret"


def _external_pub(gi: GroupInfo) -> bytes:
    data = find_extension(gi.extensions, EXT_EXTERNAL_PUB)
    if data is None:
        raise InvalidWelcome("GroupInfo has no external_pub extension")
    return decode_all(data, lambda r: r.opaque())


def verified_group_info(
    gi: GroupInfo, ratchet_tree: bytes | None, credential_check: CredentialCheck
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
    validate_tree(suite, tree, ctx.group_id, ctx.extensions, credential_check)
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
    authenticated_data: bytes = b"",
) -> tuple[GroupState, AuthenticatedContent]:
    suite, tree = verified_group_info(gi, ratchet_tree, credential_check)
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
    _check_external_proposals(nxt.tree, proposals, leaf_template)
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


def _check_external_proposals(
    tree: RatchetTree, proposals: list[Proposal], new_leaf: LeafNode
) -> None:
    """RFC 9420 §12.2: one ExternalInit, at most one Remove (of the joiner's old leaf)."""
    inits = [p for p in proposals if isinstance(p, ExternalInit)]
    removes = [p for p in proposals if isinstance(p, Remove)]
    if len(inits) != 1 or len(removes) > 1:
        raise InvalidProposal("external commit needs one ExternalInit and at most one Remove")
    for p in proposals:
        if not isinstance(p, ExternalInit | Remove | PreSharedKey):
            raise InvalidProposal("external commit carries a proposal it may not")
    for r in removes:
        old = tree.leaf(r.removed)
        if old is None or old.credential != new_leaf.credential:
            raise InvalidProposal("external commit may only remove the joiner's old leaf")


def _apply(
    tree: RatchetTree, proposals: list[Proposal], new_leaf: LeafNode
) -> tuple[Applied, int]:
    """Removes, then the joiner's leaf where an Add would put it; returns its index."""
    out = Applied()
    for p in proposals:
        if isinstance(p, Remove):
            tree.remove_leaf(p.removed)
            out.removed.append(p.removed)
            tree.truncate()
    index = tree.add_leaf(new_leaf)
    out.psks = [p.psk for p in proposals if isinstance(p, PreSharedKey)]
    return out, index


def process_external_commit(
    state: GroupState,
    ac: AuthenticatedContent,
    *,
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int | None,
) -> CommitOutcome:
    """Validate and apply a commit sent by a joining non-member (RFC 9420 §12.4.3.2)."""
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
    _check_external_proposals(state.tree, proposals, new_leaf)
    # The signature is by the joiner's new leaf (RFC 9420 §6.1, new_member_commit).
    from veil.core.mls.framing import verify_content_signature

    verify_content_signature(suite, new_leaf.signature_key, ac, state.context)
    nxt = _copy_for_commit(state)
    applied, committer = _apply(nxt.tree, proposals, new_leaf)
    if state.my_leaf in applied.removed:
        return CommitOutcome(None, applied=applied)
    index = TreeIndex.of(nxt.tree)
    index.forget(new_leaf)
    validate_leaf_node(
        suite, new_leaf, expected_source=SOURCE_COMMIT, group_id=state.group_id,
        leaf_index=committer, group_extensions=state.context.extensions, index=index,
        credential_check=credential_check, now=now,
    )
    kem_output = next(p.kem_output for p in proposals if isinstance(p, ExternalInit))
    external_priv = suite.derive_key_pair(state.secrets.external_secret).private
    init_secret = suite.hpke_export_decap(external_priv, kem_output, b"", EXPORT_LABEL,
                                          suite.nh)
    psks = resolve_psks(state, applied.psks, external_psks)
    fdp = apply_received_path(suite, nxt.tree, committer, commit.path, state.group_id)
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
