"""The application-facing MLS group (RFC 9420): one class, one screen.

    bundle = Group.key_package(1, Credential.basic(b"bob"), now=t)   # Bob publishes
    alice = Group.create(1, Credential.basic(b"alice"), now=t)
    out = alice.commit(add=[bundle.key_package.encoded()], now=t)
    alice.merge_pending_commit()               # sent commits are staged ...
    bob = Group.join(out.welcome, bundle, now=t)
    ct = alice.encrypt(b"hi");  bob.process(ct, now=t)  # -> ApplicationMessage
    staged = bob.process(commit, now=t)        # ... and so are received ones (§12.4.2)
    bob.merge_staged(staged)                   # or bob.discard_staged(staged)
    saved = bob.save(); bob = Group.restore(saved)   # SavedGroup(slow, hot)
    if bob.dirty == {"hot"}: store(bob.save_hot())   # after a message: the hot part only

Every method either returns a result or raises a subclass of
:class:`veil.core.mls.errors.MlsError`; the state changes only on success. Every
operation that judges KeyPackage lifetimes (RFC 9420 §7.3) takes the time as a required
``now`` (whole seconds since the Unix epoch): there is no default, and no value that
means "do not check". The saved formats are described in ``persist``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from veil.core.mls import keyschedule as ks
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import get_suite
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidCommit,
    InvalidState,
    MlsDecodeError,
    NotAMember,
    UnknownSender,
    WrongEpoch,
    WrongGroup,
)
from veil.core.mls.framing import (
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    verify_content_signature,
    verify_membership_tag,
)
from veil.core.mls.group_ops import (
    CommitOutcome,
    create_commit,
    process_commit,
    proposal_ref,
)
from veil.core.mls.leaf import (
    SOURCE_UPDATE,
    Capabilities,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
)
from veil.core.mls.messages import (
    CONTENT_APPLICATION,
    SENDER_MEMBER,
    SENDER_NEW_MEMBER_COMMIT,
    WF_PRIVATE,
    WF_PUBLIC,
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupInfo,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    Welcome,
)
from veil.core.mls.persist import (
    GroupConfig,
    SavedGroup,
    binding,
    decode_legacy,
    decode_parts,
    decode_single,
    encode_hot,
    encode_single,
    encode_slow,
)
from veil.core.mls.proposals import (
    PSK_EXTERNAL,
    Add,
    Commit,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    Remove,
    Update,
)
from veil.core.mls.results import (
    ApplicationMessage,
    CommitApplied,
    CommitResult,
    Processed,
    ProposalReceived,
    Received,
    StagedCommit,
)
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.state import CachedProposal, GroupState
from veil.core.mls.tree import RatchetTree
from veil.core.mls.validation import (
    CredentialCheck,
    TreeIndex,
    basic_credential_check,
    require_time,
    validate_key_package,
)
from veil.core.mls.welcome import (
    KeyPackageBundle,
    WelcomePreview,
    join_from_welcome,
    make_key_package,
    preview_welcome,
)

SLOW = "slow"
HOT = "hot"


class Group:
    """A member's view of one MLS group."""

    def __init__(
        self,
        state: GroupState,
        *,
        credential_check: CredentialCheck = basic_credential_check,
        external_psks: Mapping[bytes, bytes] | None = None,
        private_handshakes: bool = False,
        keep_previous_epoch: bool = True,
        unique_credentials: bool = True,
    ) -> None:
        self._state: GroupState | None = state
        # The last epoch's state, in memory only, so that application messages sent just
        # before a commit still decrypt after it; never serialised, one epoch at most.
        self._previous: GroupState | None = None
        self._pending: CommitOutcome | None = None
        self._check = credential_check
        self._psks: dict[bytes, bytes] = dict(external_psks or {})
        # Saved with the slow part, so that a restore cannot switch the group's behaviour.
        self._config = GroupConfig(private_handshakes, unique_credentials, keep_previous_epoch)
        self._keep_previous = keep_previous_epoch
        # One leaf per credential (RFC 9420 §12.2 "a client already in the group");
        # False for applications whose clients share a credential across leaves.
        self._unique = unique_credentials
        self._handshake_wf = WF_PRIVATE if private_handshakes else WF_PUBLIC
        # What changed since the last save: the slow part by flag (few places change
        # it), the hot part by the secret tree's change counter (every message).
        self._slow_dirty = True
        self._hot_dirty = True
        self._hot_mark = -1
        self._saved_binding: bytes | None = None

    # -- lifecycle ------------------------------------------------------------------

    @staticmethod
    def key_package(
        suite_id: int, credential: Credential, *, now: int, signature_priv: bytes | None = None,
        lifetime_seconds: int = 90 * 24 * 3600, capabilities: Capabilities | None = None,
    ) -> KeyPackageBundle:
        """A KeyPackage to publish, with the private keys to keep for joining."""
        return make_key_package(suite_id, credential, now=require_time(now),
                                signature_priv=signature_priv,
                                lifetime_seconds=lifetime_seconds, capabilities=capabilities)

    @classmethod
    def create(
        cls,
        suite_id: int,
        credential: Credential,
        *,
        now: int,
        signature_priv: bytes | None = None,
        group_id: bytes | None = None,
        extensions: Sequence[Extension] = (),
        credential_check: CredentialCheck = basic_credential_check,
        private_handshakes: bool = False,
        unique_credentials: bool = True,
        capabilities: Capabilities | None = None,
    ) -> Group:
        """A new one-member group at epoch 0 (RFC 9420 §11). ``capabilities``: the
        creator's leaf's (an application's own GroupContext extension types must be
        listed there before a GroupContextExtensions proposal may use them)."""
        suite = get_suite(suite_id)
        bundle = make_key_package(suite_id, credential, now=require_time(now),
                                  signature_priv=signature_priv, capabilities=capabilities)
        if not credential_check(credential, bundle.key_package.leaf_node.signature_key, None):
            raise CredentialRejected("credential refused by the application")
        leaf = bundle.key_package.leaf_node
        tree = RatchetTree(suite, [leaf])
        gid = group_id if group_id is not None else os.urandom(16)
        ctx = GroupContext(suite_id, gid, 0, tree.tree_hash(), b"", list(extensions))
        secrets = ks.next_epoch(suite, os.urandom(suite.nh), None, None, ctx.encoded())
        tag = suite.mac(secrets.confirmation_key, b"")
        state = GroupState(
            suite, ctx, tree, ks.interim_transcript_hash(suite, b"", tag), tag, secrets,
            SecretTree(suite, secrets.encryption_secret, 1), 0, bundle.signature_priv,
            {0: (leaf.encryption_key, bundle.encryption_priv)},
        )
        state.remember_resumption_psk()
        return cls(state, credential_check=credential_check,
                   private_handshakes=private_handshakes, unique_credentials=unique_credentials)

    @classmethod
    def join(
        cls,
        welcome: bytes,
        bundle: KeyPackageBundle,
        *,
        now: int,
        ratchet_tree: bytes | None = None,
        external_psks: Mapping[bytes, bytes] | None = None,
        credential_check: CredentialCheck = basic_credential_check,
        private_handshakes: bool = False,
        check_tree_lifetimes: bool = True,
        unique_credentials: bool = True,
    ) -> Group:
        """Join from a Welcome (an MLSMessage) addressed to ``bundle``'s KeyPackage.

        ``now`` judges the lifetime of our KeyPackage (always) and of the key-package
        leaves of the tree (unless ``check_tree_lifetimes=False``: for groups whose idle
        members still sit on an expired KeyPackage leaf; RFC 9420 §7.3 recommends the
        check but does not require it for received leaves).
        """
        msg = decode_all(welcome, MLSMessage.read)
        if not isinstance(msg.body, Welcome):
            raise MlsDecodeError("message is not a Welcome")
        state = join_from_welcome(msg.body, bundle, ratchet_tree=ratchet_tree,
                                  external_psks=external_psks or {},
                                  credential_check=credential_check, now=require_time(now),
                                  check_tree_lifetimes=check_tree_lifetimes)
        return cls(state, credential_check=credential_check, external_psks=external_psks,
                   private_handshakes=private_handshakes, unique_credentials=unique_credentials)

    @classmethod
    def join_external(
        cls,
        group_info: bytes,
        credential: Credential,
        *,
        now: int,
        ratchet_tree: bytes | None = None,
        signature_priv: bytes | None = None,
        resync_leaf: int | None = None,
        psk_ids: Sequence[PreSharedKeyID] = (),
        external_psks: Mapping[bytes, bytes] | None = None,
        credential_check: CredentialCheck = basic_credential_check,
        private_handshakes: bool = False,
        check_tree_lifetimes: bool = True,
        unique_credentials: bool = True,
    ) -> tuple[Group, bytes]:
        """Join by external commit from a GroupInfo (RFC 9420 §12.4.3.2).

        Returns the new member and the Commit to send; the member is in the new epoch
        already, so drop it if the delivery service rejects the commit. ``resync_leaf``
        removes this client's own old leaf in the same commit: members accept that only
        when ``signature_priv`` is that leaf's signature key and the credential is one
        the credential check accepts as its successor (by default: the same).
        """
        from veil.core.mls.external import create_external_commit

        msg = decode_all(group_info, MLSMessage.read)
        if not isinstance(msg.body, GroupInfo):
            raise MlsDecodeError("message is not a GroupInfo")
        gi = msg.body
        bundle = make_key_package(gi.group_context.cipher_suite, credential,
                                  now=require_time(now), signature_priv=signature_priv)
        psks = dict(external_psks or {})
        state, ac = create_external_commit(
            gi, bundle.key_package.leaf_node, bundle.signature_priv,
            ratchet_tree=ratchet_tree, resync_leaf=resync_leaf, psk_ids=list(psk_ids),
            external_psks=psks, credential_check=credential_check, now=now,
            check_tree_lifetimes=check_tree_lifetimes, unique_credentials=unique_credentials,
        )
        commit = MLSMessage(PublicMessage(ac.content, ac.auth, None)).encoded()
        return cls(state, credential_check=credential_check, external_psks=psks,
                   private_handshakes=private_handshakes,
                   unique_credentials=unique_credentials), commit

    # -- saving and restoring (formats: ``persist``) -----------------------------------

    @property
    def config(self) -> GroupConfig:
        return self._config

    @property
    def dirty(self) -> frozenset[str]:
        """The parts changed since the last save: a subset of {"slow", "hot"}.

        One application message, sent or received, makes only the hot part dirty; a
        proposal the slow part (and the hot part too when handshakes are private); an
        epoch change both. Empty once the member was removed (delete its state).
        """
        s = self._state
        if s is None:
            return frozenset()
        hot = self._hot_dirty or s.secret_tree.changes != self._hot_mark
        return frozenset((SLOW,) * self._slow_dirty + (HOT,) * hot)

    def _saved(self, *, slow: bool, hot: bool) -> None:
        s = self._live()
        if slow:
            self._slow_dirty = False
            self._saved_binding = binding(s)
        if hot:
            self._hot_dirty = False
            self._hot_mark = s.secret_tree.changes

    def save(self) -> SavedGroup:
        """Both parts (secrets included: store each encrypted); clears :attr:`dirty`.

        After an epoch change both parts are new and belong together: write them in
        one transaction, or a restore finds the old hot part refused (``StateMismatch``).
        """
        s = self._live()
        saved = SavedGroup(encode_slow(s, self._config), encode_hot(s))
        self._saved(slow=True, hot=True)
        return saved

    def save_slow(self) -> bytes:
        """The slow part alone: O(group size); needed when ``"slow"`` is dirty."""
        data = encode_slow(self._live(), self._config)
        self._saved(slow=True, hot=False)
        return data

    def save_hot(self) -> bytes:
        """The hot part alone: O(senders with state in this epoch).

        Refused (``InvalidState``) until the slow part of this epoch was saved, since
        it would pair with no saved slow part.
        """
        s = self._live()
        if self._saved_binding != binding(s):
            raise InvalidState("the slow part of this epoch is not saved: call save() first")
        data = encode_hot(s)
        self._saved(slow=False, hot=True)
        return data

    def serialize(self) -> bytes:
        """Both parts in one blob, for callers that keep one record; clears :attr:`dirty`."""
        s = self._live()
        data = encode_single(s, self._config)
        self._saved(slow=True, hot=True)
        return data

    @classmethod
    def restore(
        cls, saved: SavedGroup | bytes, *,
        credential_check: CredentialCheck = basic_credential_check,
        external_psks: Mapping[bytes, bytes] | None = None,
        private_handshakes: bool | None = None, unique_credentials: bool | None = None,
        keep_previous_epoch: bool | None = None,
    ) -> Group:
        """A member from :meth:`save` (a SavedGroup) or :meth:`serialize` (bytes).

        The configuration comes from the saved state; an option passed here must agree
        with it (``ConfigMismatch``), so forgetting one cannot switch the group's
        behaviour. Version-1 blobs: :meth:`restore_legacy`.
        """
        if isinstance(saved, SavedGroup):
            state, config = decode_parts(saved.slow, saved.hot)
        else:
            state, config = decode_single(saved)
        config.with_explicit(private_handshakes=private_handshakes,
                             unique_credentials=unique_credentials,
                             keep_previous_epoch=keep_previous_epoch)
        group = cls(state, credential_check=credential_check, external_psks=external_psks,
                    private_handshakes=config.private_handshakes,
                    unique_credentials=config.unique_credentials,
                    keep_previous_epoch=config.keep_previous_epoch)
        group._saved(slow=True, hot=True)
        return group

    @classmethod
    def restore_legacy(
        cls, data: bytes, *, private_handshakes: bool, unique_credentials: bool,
        credential_check: CredentialCheck = basic_credential_check,
        external_psks: Mapping[bytes, bytes] | None = None, keep_previous_epoch: bool = True,
    ) -> Group:
        """A member from a version-1 blob, which holds no configuration: it is required
        here. The result is dirty: :meth:`save` it in the current form."""
        return cls(decode_legacy(data), credential_check=credential_check,
                   external_psks=external_psks, private_handshakes=private_handshakes,
                   unique_credentials=unique_credentials,
                   keep_previous_epoch=keep_previous_epoch)

    # -- reading --------------------------------------------------------------------

    def _live(self) -> GroupState:
        if self._state is None:
            raise NotAMember("this member was removed from the group")
        return self._state

    @property
    def active(self) -> bool:
        return self._state is not None

    @property
    def group_id(self) -> bytes:
        return self._live().group_id

    @property
    def epoch(self) -> int:
        return self._live().epoch

    @property
    def my_leaf(self) -> int:
        return self._live().my_leaf

    @property
    def epoch_authenticator(self) -> bytes:
        return self._live().secrets.epoch_authenticator

    def members(self) -> list[tuple[int, Credential]]:
        return [(i, leaf.credential) for i, leaf in self._live().tree.members()]

    @property
    def extensions(self) -> list[Extension]:
        """The GroupContext extensions of the current epoch (a copy)."""
        return list(self._live().context.extensions)

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        s = self._live()
        return ks.export_secret(s.suite, s.secrets.exporter_secret, label, context, length)

    def ratchet_tree(self) -> bytes:
        """The current epoch's ratchet tree, encoded as the ratchet_tree extension holds
        it (RFC 9420 §12.4.3.3): for a joiner whose Welcome omits it."""
        return self._live().tree.encode()

    @staticmethod
    def preview_welcome(welcome: bytes, bundle: KeyPackageBundle, *,
                        external_psks: Mapping[bytes, bytes] | None = None
                        ) -> WelcomePreview:
        """A Welcome's group, epoch and exporter before the tree is known
        (:func:`veil.core.mls.welcome.preview_welcome`: only a key to fetch the tree
        with; :meth:`join` does every check)."""
        msg = decode_all(welcome, MLSMessage.read)
        if not isinstance(msg.body, Welcome):
            raise MlsDecodeError("message is not a Welcome")
        return preview_welcome(msg.body, bundle, external_psks=external_psks)

    def group_info(self, include_tree: bool = True) -> bytes:
        """A signed GroupInfo (an MLSMessage) for the current epoch (RFC 9420 §12.4.3)."""
        from veil.core.mls.group_ops import make_group_info

        return MLSMessage(make_group_info(self._live(), include_tree)).encoded()

    def add_external_psk(self, psk_id: bytes, secret: bytes) -> None:
        self._psks[psk_id] = secret

    # -- sending --------------------------------------------------------------------

    def _frame(self, content: FramedContent, wire_format: int, padding: int = 0) -> bytes:
        s = self._live()
        sig = sign_content(s.suite, s.sig_priv, wire_format, content, s.context)
        auth = FramedContentAuthData(sig)
        ac = AuthenticatedContent(wire_format, content, auth)
        if not isinstance(content.content, bytes | Commit):
            ref = proposal_ref(s.suite, ac)
            s.cache_proposal(CachedProposal(ref, content.content, ac))
            self._slow_dirty = True
        if wire_format == WF_PUBLIC:
            return MLSMessage(protect_public(s.suite, content, auth, s.secrets.membership_key,
                                             s.context)).encoded()
        return MLSMessage(protect_private(s.suite, s.secret_tree, s.secrets.sender_data_secret,
                                          content, auth, padding)).encoded()

    def _content(self, body: bytes | Proposal | Commit, aad: bytes = b"") -> FramedContent:
        s = self._live()
        return FramedContent(s.group_id, s.epoch, Sender(SENDER_MEMBER, s.my_leaf), aad, body)

    def encrypt(self, data: bytes, authenticated_data: bytes = b"", padding: int = 0) -> bytes:
        """An application message as a PrivateMessage (RFC 9420 §6.3)."""
        if self._pending is not None:
            raise InvalidState("a commit is pending: merge or discard it first")
        return self._frame(self._content(data, authenticated_data), WF_PRIVATE, padding)

    def propose(self, proposal: Proposal) -> bytes:
        """Send a standalone proposal; it is cached for this epoch's commit."""
        return self._frame(self._content(proposal), self._handshake_wf)

    def propose_add(self, key_package: bytes, *, now: int) -> bytes:
        """Propose an Add; the KeyPackage is validated first (RFC 9420 §10.1, §7.3: a
        client MUST check the lifetime of a leaf it sends)."""
        s = self._live()
        kp = _decode_key_package(key_package)
        validate_key_package(s.suite, kp, group_extensions=s.context.extensions,
                             index=TreeIndex.of(s.tree, self._unique),
                             credential_check=self._check,
                             now=require_time(now))
        return self.propose(Add(kp))

    def propose_remove(self, leaf_index: int) -> bytes:
        return self.propose(Remove(leaf_index))

    def propose_update(self) -> bytes:
        s = self._live()
        old = s.tree.leaf(s.my_leaf)
        if old is None:
            raise NotAMember("our leaf is blank")
        kp = s.suite.generate_hpke_key_pair()
        leaf = replace(old, encryption_key=kp.public, leaf_node_source=SOURCE_UPDATE,
                       lifetime=None, parent_hash=b"").signed(
            s.suite, s.sig_priv, s.group_id, s.my_leaf)
        s.pending_leaf_keys[kp.public] = kp.private
        self._slow_dirty = True
        return self.propose(Update(leaf))

    def commit(
        self,
        *,
        now: int,
        add: Iterable[bytes] = (),
        remove: Iterable[int] = (),
        update: bool = False,
        psk_ids: Iterable[PreSharedKeyID] = (),
        extensions: Sequence[Extension] | None = None,
        include_pending: bool = True,
        authenticated_data: bytes = b"",
        include_tree_in_welcome: bool = True,
    ) -> CommitResult:
        """Commit cached proposals plus the given changes; the result is staged.

        Send ``commit`` to the group and ``welcome`` to new members, then call
        :meth:`merge_pending_commit` once the delivery service accepted the commit.
        The given changes must be valid (or this raises); cached proposals that are not
        valid, or not together (RFC 9420 §12.2), are left out, so no member can block
        the commits of others. ``now`` judges KeyPackage lifetimes.
        """
        require_time(now)
        s = self._live()
        if self._pending is not None:
            raise InvalidState("a commit is already pending")
        inline: list[Proposal] = []
        if extensions is not None:
            inline.append(GroupContextExtensions(list(extensions)))
        inline.extend(Remove(i) for i in remove)
        inline.extend(Add(_decode_key_package(kp)) for kp in add)
        for psk_id in psk_ids:
            inline.append(PreSharedKey(psk_id))
        refs = [
            ref for ref, c in s.proposals.items()
            if include_pending
            and not (c.sender == s.my_leaf and isinstance(c.proposal, Update))
        ]
        outcome = create_commit(
            s, inline=inline, by_reference=refs, force_path=update,
            wire_format=self._handshake_wf, authenticated_data=authenticated_data,
            external_psks=self._psks, credential_check=self._check, now=now,
            include_tree_in_welcome=include_tree_in_welcome, unique_credentials=self._unique,
        )
        ac = outcome.content
        if ac is None:
            raise InvalidState("commit produced no content")
        if self._handshake_wf == WF_PUBLIC:
            msg = MLSMessage(protect_public(s.suite, ac.content, ac.auth,
                                            s.secrets.membership_key, s.context))
        else:
            msg = MLSMessage(protect_private(s.suite, s.secret_tree,
                                             s.secrets.sender_data_secret, ac.content, ac.auth))
        self._pending = outcome
        welcome = MLSMessage(outcome.welcome).encoded() if outcome.welcome else None
        return CommitResult(msg.encoded(), welcome)

    def merge_pending_commit(self) -> CommitApplied:
        if self._pending is None or self._pending.state is None:
            raise InvalidState("no commit is pending")
        outcome = self._pending
        self._pending = None
        self._advance_to(outcome.state)
        applied = outcome.applied
        return CommitApplied(
            self.my_leaf, self.epoch,
            [i for i, _ in applied.added] if applied else [],
            list(applied.removed) if applied else [],
        )

    def discard_pending_commit(self) -> None:
        self._pending = None

    # -- receiving ------------------------------------------------------------------

    def process(self, message: bytes, *, now: int) -> Received:
        """Process one MLSMessage from the group; the state changes only on success.

        An application message or a proposal takes effect here. A Commit is validated in
        full and returned as a :class:`StagedCommit`, which changes nothing until
        :meth:`merge_staged` (:meth:`process_and_merge` does both). ``now`` judges the
        lifetimes of KeyPackages added by a commit. Pass the time the delivery service
        accepted the message when the application has it, so that all members judge a
        commit at the same instant even if one processes it days later; the local clock
        otherwise.
        """
        require_time(now)
        s = self._live()
        msg = decode_all(message, MLSMessage.read)
        body = msg.body
        if not isinstance(body, PublicMessage | PrivateMessage):
            raise MlsDecodeError("not a group message")
        gid = body.content.group_id if isinstance(body, PublicMessage) else body.group_id
        epoch = body.content.epoch if isinstance(body, PublicMessage) else body.epoch
        if gid != s.group_id:
            raise WrongGroup("message is for another group")
        if epoch != s.epoch:
            prev = self._previous
            if (prev is not None and epoch == prev.epoch and isinstance(body, PrivateMessage)
                    and body.content_type == CONTENT_APPLICATION):
                return self._late_application(prev, body)
            raise WrongEpoch(f"message is for epoch {epoch}, we are at {s.epoch}")
        decrypted = None
        if isinstance(body, PublicMessage):
            if body.content.sender.sender_type == SENDER_NEW_MEMBER_COMMIT:
                return self._stage_external(s, body, now)
            if body.content.sender.sender_type != SENDER_MEMBER:
                raise UnknownSender("only member senders and external commits are supported")
            if isinstance(body.content.content, bytes):
                raise MlsDecodeError("application data must be sent as PrivateMessage")
            verify_membership_tag(s.suite, body, s.secrets.membership_key, s.context)
            ac = AuthenticatedContent(WF_PUBLIC, body.content, body.auth)
        else:
            decrypted = unprotect_private(s.suite, s.secret_tree, s.secrets.sender_data_secret,
                                          body)
            ac = decrypted.content
        sender = ac.content.sender.index
        leaf = s.tree.leaf(sender)
        if leaf is None:
            raise UnknownSender("sender leaf is blank or outside the tree")
        verify_content_signature(s.suite, leaf.signature_key, ac, s.context)
        result = self._dispatch(s, ac, now)
        # A staged commit consumes nothing: discarding it must leave the state as it was,
        # and merging it leaves this epoch's handshake keys behind anyway.
        if decrypted is not None and not isinstance(result, StagedCommit):
            decrypted.consume()
        return result

    def process_and_merge(self, message: bytes, *, now: int) -> Processed:
        """:meth:`process`, merging a Commit at once: for callers that apply every commit
        the delivery service hands them, in its order."""
        got = self.process(message, now=now)
        if isinstance(got, StagedCommit):
            return self.merge_staged(got)
        return got

    def merge_staged(self, staged: StagedCommit) -> CommitApplied:
        """Enter the epoch a staged received Commit leads to.

        Only a commit staged in the current epoch of this group merges; once one merged
        (or our own pending commit did), every other staged commit is stale and refused.
        A pending commit of our own is dropped: the delivery service chose this one.
        """
        if staged._status != "staged":
            raise InvalidState(f"this commit was {staged._status} already")
        if self._state is None or staged._base is not self._state:
            raise InvalidState("staged commit is stale: the group left the epoch it was for")
        nxt = staged._next
        staged._status, staged._base, staged._next = "merged", None, None
        self._pending = None
        self._advance_to(nxt)
        return CommitApplied(staged.committer, staged.epoch, list(staged.added),
                             list(staged.removed), removed_me=staged.removed_me)

    def discard_staged(self, staged: StagedCommit) -> None:
        """Drop a staged commit (the delivery service rejected it); nothing changes."""
        if staged._status == "merged":
            raise InvalidState("this commit was merged already")
        staged._status, staged._base, staged._next = "discarded", None, None

    def _advance_to(self, state: GroupState | None) -> None:
        old = self._state
        self._state = state
        self._previous = old if (state is not None and self._keep_previous) else None
        self._slow_dirty = self._hot_dirty = True

    def _late_application(self, prev: GroupState, body: PrivateMessage) -> ApplicationMessage:
        """An application message of the epoch that just ended (RFC 9420 §15.2)."""
        got = unprotect_private(prev.suite, prev.secret_tree, prev.secrets.sender_data_secret,
                                body)
        content = got.content.content
        leaf = prev.tree.leaf(content.sender.index)
        if leaf is None or not isinstance(content.content, bytes):
            raise UnknownSender("sender leaf is blank in the previous epoch")
        verify_content_signature(prev.suite, leaf.signature_key, got.content, prev.context)
        got.consume()
        return ApplicationMessage(content.sender.index, content.content,
                                  content.authenticated_data)

    def _stage_external(self, s: GroupState, msg: PublicMessage, now: int) -> StagedCommit:
        from veil.core.mls.external import process_external_commit

        ac = AuthenticatedContent(WF_PUBLIC, msg.content, msg.auth)
        outcome = process_external_commit(s, ac, external_psks=self._psks,
                                          credential_check=self._check, now=now,
                                          unique_credentials=self._unique)
        removed = list(outcome.applied.removed) if outcome.applied else []
        if outcome.state is None:
            return StagedCommit(s, None, -1, [], removed)
        joiner = outcome.committer
        return StagedCommit(s, outcome.state, joiner, [joiner], removed)

    def _dispatch(self, s: GroupState, ac: AuthenticatedContent, now: int) -> Received:
        body = ac.content.content
        sender = ac.content.sender.index
        if isinstance(body, bytes):
            return ApplicationMessage(sender, body, ac.content.authenticated_data)
        if isinstance(body, Commit):
            if sender == s.my_leaf:
                raise InvalidCommit("own commit: call merge_pending_commit instead")
            outcome = process_commit(s, ac, external_psks=self._psks,
                                     credential_check=self._check, now=now,
                                     unique_credentials=self._unique)
            applied = outcome.applied
            added = [i for i, _ in applied.added] if applied else []
            removed = list(applied.removed) if applied else []
            return StagedCommit(s, outcome.state, sender, added, removed)
        ref = proposal_ref(s.suite, ac)
        s.cache_proposal(CachedProposal(ref, body, ac))
        self._slow_dirty = True
        return ProposalReceived(sender, ref, body)


def _decode_key_package(data: bytes) -> KeyPackage:
    """Accept a KeyPackage either bare or wrapped in an MLSMessage."""
    try:
        msg = decode_all(data, MLSMessage.read)
    except MlsDecodeError:
        return decode_all(data, KeyPackage.read)
    if not isinstance(msg.body, KeyPackage):
        raise MlsDecodeError("message is not a KeyPackage")
    return msg.body


__all__ = [
    "PSK_EXTERNAL",
    "ApplicationMessage",
    "CommitApplied",
    "CommitResult",
    "Credential",
    "Group",
    "GroupConfig",
    "KeyPackageBundle",
    "LeafNode",
    "Processed",
    "ProposalReceived",
    "Received",
    "SavedGroup",
    "StagedCommit",
]
