"""Commit creation and processing, and the epoch transition (RFC 9420 §12.4, §8).

Both directions work on a copy of the group state and return the next epoch's state;
the caller keeps it only when everything verified (decryption is transactional).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from veil.core.mls import keyschedule as ks
from veil.core.mls import treemath as tm
from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import (
    InvalidCommit,
    MissingPsk,
    MlsSignatureError,
    NotAMember,
    UnknownProposal,
    UnknownSender,
)
from veil.core.mls.framing import sign_content
from veil.core.mls.leaf import EXT_EXTERNAL_PUB, EXT_RATCHET_TREE, SOURCE_COMMIT, Extension
from veil.core.mls.messages import (
    SENDER_MEMBER,
    AuthenticatedContent,
    EncryptedGroupSecrets,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    Sender,
    Welcome,
)
from veil.core.mls.proposal_ops import (
    Applied,
    ProposalEntry,
    apply_proposals,
    path_required,
    select_proposals,
    validate_proposals,
)
from veil.core.mls.proposals import (
    PSK_EXTERNAL,
    Commit,
    HPKECiphertext,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
)
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.state import GroupState
from veil.core.mls.treekem import (
    PathResult,
    apply_new_path,
    apply_received_path,
    check_path_keys_fresh,
    decrypt_path,
    encrypt_path,
)
from veil.core.mls.validation import CredentialCheck, TreeIndex, validate_leaf_node


def proposal_ref(suite: CipherSuite, ac: AuthenticatedContent) -> bytes:
    """ProposalRef (RFC 9420 §5.2)."""
    return suite.ref_hash(b"MLS 1.0 Proposal Reference", ac.encoded())


def resolve_psks(
    state: GroupState, ids: list[PreSharedKeyID], external: Mapping[bytes, bytes]
) -> list[tuple[PreSharedKeyID, bytes]]:
    out = []
    for psk_id in ids:
        if psk_id.psktype == PSK_EXTERNAL:
            secret = external.get(psk_id.psk_id)
        elif psk_id.psk_group_id != state.group_id:
            secret = None
        elif psk_id.psk_epoch == state.epoch:
            secret = state.secrets.resumption_psk
        else:
            secret = state.resumption_psks.get(psk_id.psk_epoch)
        if secret is None:
            raise MissingPsk("a pre-shared key named by the commit is not available")
        out.append((psk_id, secret))
    return out


@dataclass(slots=True)
class CommitOutcome:
    """The next epoch's state plus, for a committer, what to send."""

    state: GroupState | None  # None: this member was removed
    content: AuthenticatedContent | None = None
    welcome: Welcome | None = None
    group_info: GroupInfo | None = None
    applied: Applied | None = None
    committer: int = -1


def _advance(
    old: GroupState,
    tree_state: GroupState,
    wire_format: int,
    content: FramedContent,
    signature: bytes,
    commit_secret: bytes | None,
    psks: list[tuple[PreSharedKeyID, bytes]],
    extensions: list[Extension],
) -> tuple[GroupState, bytes]:
    """Transcript hash, key schedule and secret tree for the next epoch."""
    suite = old.suite
    confirmed = ks.confirmed_transcript_hash(
        suite, old.interim_transcript_hash, wire_format, content, signature
    )
    ctx = GroupContext(
        suite.suite_id, old.group_id, old.epoch + 1, tree_state.tree.tree_hash(), confirmed,
        extensions,
    )
    psk_secret = ks.psk_secret(suite, psks) if psks else None
    secrets = ks.next_epoch(
        suite, old.secrets.init_secret, commit_secret, psk_secret, ctx.encoded()
    )
    tag = suite.mac(secrets.confirmation_key, confirmed)
    new = replace(
        tree_state,
        context=ctx,
        interim_transcript_hash=ks.interim_transcript_hash(suite, confirmed, tag),
        confirmation_tag=tag,
        secrets=secrets,
        secret_tree=SecretTree(suite, secrets.encryption_secret, tree_state.tree.n_leaves),
        proposals={},
        resumption_psks=dict(old.resumption_psks),
    )
    new.remember_resumption_psk()
    new.prune_private_keys()
    return new, tag


def _copy_for_commit(state: GroupState) -> GroupState:
    return replace(
        state, tree=state.tree.copy(), private_keys=dict(state.private_keys),
        pending_leaf_keys={}, proposals={},
    )


def create_commit(
    state: GroupState,
    *,
    inline: list[Proposal],
    by_reference: list[bytes],
    force_path: bool,
    wire_format: int,
    authenticated_data: bytes,
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int,
    include_tree_in_welcome: bool = True,
    unique_credentials: bool = True,
) -> CommitOutcome:
    """Build a Commit over cached and inline proposals (RFC 9420 §12.4.1).

    The inline proposals must all be valid; cached ones that are not (or not together)
    are left out (:func:`select_proposals`).
    """
    suite = state.suite
    me = state.my_leaf
    cached_entries: list[ProposalEntry] = []
    for ref in by_reference:
        cached = state.proposals.get(ref)
        if cached is None:
            raise UnknownProposal("proposal reference not in this epoch's cache")
        cached_entries.append(ProposalEntry(cached.proposal, cached.sender, ref))

    def psk_available(psk_id: PreSharedKeyID) -> bool:
        try:
            resolve_psks(state, [psk_id], external_psks)
        except MissingPsk:
            return False
        return True

    entries = select_proposals(
        suite, state.tree, inline=[ProposalEntry(p, None) for p in inline],
        cached=cached_entries, committer=me, group_id=state.group_id,
        group_extensions=state.context.extensions, credential_check=credential_check,
        now=now, psk_available=psk_available, unique_credentials=unique_credentials,
    )
    nxt = _copy_for_commit(state)
    applied = apply_proposals(nxt.tree, entries)
    extensions = applied.extensions if applied.extensions is not None else list(
        state.context.extensions
    )
    psks = resolve_psks(state, applied.psks, external_psks)
    commit_secret: bytes | None = None
    path = None
    path_result: PathResult | None = None
    if force_path or path_required(entries):
        my_leaf_node = nxt.tree.leaf(me)
        if my_leaf_node is None:
            raise NotAMember("committer's leaf is blank")
        pending = apply_new_path(suite, nxt.tree, me, my_leaf_node, state.sig_priv,
                                 state.group_id)
        provisional = GroupContext(
            suite.suite_id, state.group_id, state.epoch + 1, nxt.tree.tree_hash(),
            state.context.confirmed_transcript_hash, extensions,
        )
        path = encrypt_path(suite, nxt.tree, pending, provisional.encoded(),
                            [i for i, _ in applied.added])
        path_result = pending.result
        commit_secret = path_result.commit_secret
        for x, priv in path_result.private_keys.items():
            node = nxt.tree.nodes[x]
            if node is not None:
                nxt.private_keys[x] = (node.encryption_key, priv)
    refs_or_inline = [
        ProposalOrRef(reference=e.ref) if e.ref is not None else ProposalOrRef(e.proposal)
        for e in entries
    ]
    content = FramedContent(state.group_id, state.epoch, Sender(SENDER_MEMBER, me),
                            authenticated_data, Commit(refs_or_inline, path))
    signature = sign_content(suite, state.sig_priv, wire_format, content, state.context)
    new, tag = _advance(state, nxt, wire_format, content, signature, commit_secret, psks,
                        extensions)
    ac = AuthenticatedContent(wire_format, content, FramedContentAuthData(signature, tag))
    group_info = None
    welcome = None
    if applied.added:
        group_info = make_group_info(new, include_tree=include_tree_in_welcome)
        welcome = make_welcome(new, group_info, applied, path_result, [p for p, _ in psks])
    return CommitOutcome(new, ac, welcome, group_info, applied)


def make_group_info(state: GroupState, include_tree: bool = True) -> GroupInfo:
    suite = state.suite
    exts = [Extension(EXT_EXTERNAL_PUB, _opaque(
        ks.external_pub(suite, state.secrets.external_secret)))]
    if include_tree:
        exts.insert(0, Extension(EXT_RATCHET_TREE, state.tree.encode()))
    gi = GroupInfo(state.context, exts, state.confirmation_tag, state.my_leaf)
    sig = suite.sign_with_label(state.sig_priv, b"GroupInfoTBS", gi.tbs())
    return replace(gi, signature=sig)


def _opaque(data: bytes) -> bytes:
    from veil.core.mls.codec import Writer

    w = Writer()
    w.opaque(data)
    return w.bytes()


def make_welcome(
    state: GroupState,
    group_info: GroupInfo,
    applied: Applied,
    path: PathResult | None,
    psk_ids: list[PreSharedKeyID],
) -> Welcome:
    """Welcome for the members added by this commit (RFC 9420 §12.4.3.1)."""
    suite = state.suite
    key, nonce = ks.welcome_key_nonce(suite, state.secrets.welcome_secret)
    from veil.core.mls.codec import Writer

    gi_w = Writer()
    group_info.write(gi_w)
    encrypted_gi = suite.seal(key, nonce, b"", gi_w.bytes())
    secrets = []
    me = 2 * state.my_leaf
    # The HPKE info holds the whole encrypted GroupInfo and GroupSecrets differ only by
    # path secret (at most log n distinct values): encode each once, not per new member.
    info = suite.hpke_info(b"Welcome", encrypted_gi)
    encoded_secrets: dict[bytes | None, bytes] = {}
    for leaf_index, kp in applied.added:
        path_secret = None
        if path is not None:
            path_secret = path.path_secrets.get(tm.common_ancestor(me, 2 * leaf_index))
        plain = encoded_secrets.get(path_secret)
        if plain is None:
            w = Writer()
            GroupSecrets(state.secrets.joiner_secret, path_secret, psk_ids).write(w)
            plain = encoded_secrets[path_secret] = w.bytes()
        kem_output, ct = suite.seal_with_info(kp.init_key, info, plain)
        secrets.append(EncryptedGroupSecrets(kp.ref(suite), HPKECiphertext(kem_output, ct)))
    return Welcome(suite.suite_id, secrets, encrypted_gi)


def process_commit(
    state: GroupState,
    ac: AuthenticatedContent,
    *,
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int,
    unique_credentials: bool = True,
) -> CommitOutcome:
    """Validate and apply a received Commit (RFC 9420 §12.4.2).

    Everything that depends only on public data (proposals, the committer's new leaf,
    the freshness of every UpdatePath key, parent hashes) is checked before any secret
    is derived, so every member refuses the same Commits, whichever node it decrypts.
    """
    suite = state.suite
    content = ac.content
    commit = content.content
    if not isinstance(commit, Commit):
        raise InvalidCommit("content is not a Commit")
    if content.sender.sender_type != SENDER_MEMBER:
        raise UnknownSender("only member commits are supported")
    committer = content.sender.index
    if committer == state.my_leaf:
        raise InvalidCommit("cannot process our own commit; merge the pending commit")
    entries: list[ProposalEntry] = []
    for por in commit.proposals:
        if por.proposal is not None:
            entries.append(ProposalEntry(por.proposal, None))
            continue
        cached = state.proposals.get(por.reference)
        if cached is None:
            raise UnknownProposal("commit refers to a proposal not received this epoch")
        if cached.sender_type != SENDER_MEMBER:
            raise UnknownSender("proposals from non-members are not supported")
        entries.append(ProposalEntry(cached.proposal, cached.sender, por.reference))
    validate_proposals(
        suite, state.tree, entries, committer=committer, group_id=state.group_id,
        group_extensions=state.context.extensions, credential_check=credential_check, now=now,
        unique_credentials=unique_credentials,
    )
    if path_required(entries) and commit.path is None:
        raise InvalidCommit("commit needs an UpdatePath but has none")
    nxt = _copy_for_commit(state)
    applied = apply_proposals(nxt.tree, entries)
    extensions = applied.extensions if applied.extensions is not None else list(
        state.context.extensions
    )
    psks = resolve_psks(state, applied.psks, external_psks)
    removed_me = state.my_leaf in applied.removed
    if state.my_leaf in applied.updated:
        leaf = nxt.tree.leaf(state.my_leaf)
        key = state.pending_leaf_keys.get(leaf.encryption_key) if leaf else None
        if leaf is None or key is None:
            raise InvalidCommit("commit applies an Update for our leaf that we did not send")
        nxt.private_keys[2 * state.my_leaf] = (leaf.encryption_key, key)
    commit_secret: bytes | None = None
    if commit.path is not None:
        index = TreeIndex.of(nxt.tree, unique_credentials)
        old_leaf = nxt.tree.leaf(committer)
        if old_leaf is None:
            raise UnknownSender("committer's leaf is blank")
        index.forget(old_leaf)
        validate_leaf_node(
            suite, commit.path.leaf_node, expected_source=SOURCE_COMMIT,
            group_id=state.group_id, leaf_index=committer, group_extensions=extensions,
            index=index, credential_check=credential_check, now=now, previous=old_leaf,
        )
        # §12.4.2: no UpdatePath key may already appear in the new tree (the old leaf
        # and old path of the committer included). Checked by everyone before
        # decrypting: otherwise only the members who derive a duplicated node notice.
        check_path_keys_fresh(nxt.tree, commit.path)
        fdp = apply_received_path(suite, nxt.tree, committer, commit.path, state.group_id)
        if not removed_me:
            provisional = GroupContext(
                suite.suite_id, state.group_id, state.epoch + 1, nxt.tree.tree_hash(),
                state.context.confirmed_transcript_hash, extensions,
            )
            result = decrypt_path(
                suite, nxt.tree, state.my_leaf, committer, commit.path, fdp,
                nxt.private_key, provisional.encoded(), [i for i, _ in applied.added],
            )
            commit_secret = result.commit_secret
            for x, priv in result.private_keys.items():
                node = nxt.tree.nodes[x]
                if node is not None:
                    nxt.private_keys[x] = (node.encryption_key, priv)
    if removed_me:
        return CommitOutcome(None, applied=applied)
    new, _ = _advance(state, nxt, ac.wire_format, content, ac.auth.signature, commit_secret,
                        psks, extensions)
    if ac.auth.confirmation_tag is None or not suite.verify_mac(
        new.secrets.confirmation_key, new.context.confirmed_transcript_hash,
        ac.auth.confirmation_tag,
    ):
        raise MlsSignatureError("commit confirmation tag does not verify")
    return CommitOutcome(new, applied=applied)

__all__ = [
    "CommitOutcome",
    "create_commit",
    "make_group_info",
    "process_commit",
    "proposal_ref",
    "resolve_psks",
    "select_proposals",
    "validate_proposals",
]
