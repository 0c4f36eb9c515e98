"""KeyPackage creation and joining a group from a Welcome (RFC 9420 §10, §12.4.3.1).

A joiner validates every leaf of the tree it receives (§7.3 via §12.4.3.1), lifetimes
included: its own KeyPackage's always (the committer, and the joiner's init key, were
only meant to be used within it), the key-package leaves of the other members by default
(§7.3 recommends it; ``check_tree_lifetimes=False`` is the caller's explicit choice for
groups whose idle members never replaced their KeyPackage leaf).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from veil.core.mls import keyschedule as ks
from veil.core.mls import treemath as tm
from veil.core.mls.codec import Reader, Writer, decode_all
from veil.core.mls.crypto import CipherSuite, get_suite, is_supported
from veil.core.mls.errors import (
    InvalidLeafNode,
    InvalidWelcome,
    MissingPsk,
    MlsSignatureError,
    NoMatchingKeyPackage,
    UnsupportedCipherSuite,
)
from veil.core.mls.leaf import (
    EXT_RATCHET_TREE,
    MLS10,
    SOURCE_COMMIT,
    SOURCE_KEY_PACKAGE,
    SOURCE_UPDATE,
    Capabilities,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
    Lifetime,
    find_extension,
)
from veil.core.mls.messages import GroupInfo, GroupSecrets, Welcome
from veil.core.mls.proposals import PSK_EXTERNAL, PreSharedKeyID
from veil.core.mls.secret_tree import SecretTree
from veil.core.mls.state import GroupState
from veil.core.mls.tree import RatchetTree
from veil.core.mls.treekem import derive_path_from
from veil.core.mls.validation import (
    CredentialCheck,
    check_lifetime,
    require_time,
    validate_leaf_node,
)

DEFAULT_LIFETIME = 90 * 24 * 3600


@dataclass(frozen=True, slots=True)
class KeyPackageBundle:
    """A KeyPackage with the private keys its owner keeps until it is used."""

    key_package: KeyPackage
    init_priv: bytes
    encryption_priv: bytes
    signature_priv: bytes

    def write(self, w: Writer) -> None:
        self.key_package.write(w)
        w.opaque(self.init_priv)
        w.opaque(self.encryption_priv)
        w.opaque(self.signature_priv)

    def encode(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.bytes()

    @staticmethod
    def decode(data: bytes) -> KeyPackageBundle:
        def read(r: Reader) -> KeyPackageBundle:
            return KeyPackageBundle(KeyPackage.read(r), r.opaque(), r.opaque(), r.opaque())

        return decode_all(data, read)


def default_capabilities(suite_id: int) -> Capabilities:
    return Capabilities(versions=(MLS10,), cipher_suites=(suite_id,), credentials=(1,))


def make_key_package(
    suite_id: int,
    credential: Credential,
    *,
    now: int,
    signature_priv: bytes | None = None,
    lifetime_seconds: int = DEFAULT_LIFETIME,
    capabilities: Capabilities | None = None,
    leaf_extensions: list[Extension] | None = None,
) -> KeyPackageBundle:
    """A fresh signed KeyPackage valid from ``now`` for ``lifetime_seconds``."""
    suite = get_suite(suite_id)
    if signature_priv is None:
        signature_priv, signature_pub = suite.generate_signature_key_pair()
    else:
        signature_pub = suite.signature_public_from_private(signature_priv)
    init = suite.generate_hpke_key_pair()
    enc = suite.generate_hpke_key_pair()
    leaf = LeafNode(
        enc.public, signature_pub, credential, capabilities or default_capabilities(suite_id),
        SOURCE_KEY_PACKAGE, Lifetime(max(0, now - 3600), now + lifetime_seconds),
        extensions=list(leaf_extensions or []),
    ).signed(suite, signature_priv)
    kp = KeyPackage(MLS10, suite_id, init.public, leaf)
    kp = KeyPackage(kp.version, kp.cipher_suite, kp.init_key, kp.leaf_node, [],
                    suite.sign_with_label(signature_priv, b"KeyPackageTBS", kp.tbs()))
    return KeyPackageBundle(kp, init.private, enc.private, signature_priv)


def validate_tree(
    suite: CipherSuite,
    tree: RatchetTree,
    group_id: bytes,
    extensions: list[Extension],
    credential_check: CredentialCheck,
    *,
    now: int,
    check_lifetimes: bool = True,
) -> None:
    """Full tree validation for a joiner (RFC 9420 §12.4.3.1 steps on the ratchet tree).

    ``check_lifetimes=False`` skips the lifetime of key-package leaves (§7.3: RECOMMENDED
    for leaves received); everything else is always checked.
    """
    tree.verify_parent_hashes()
    tree.verify_unmerged_leaves()
    seen_enc: set[bytes] = set()
    seen_sig: set[bytes] = set()
    for x, node in enumerate(tree.nodes):
        if node is None:
            continue
        if node.encryption_key in seen_enc:
            raise InvalidWelcome("an encryption key appears twice in the tree")
        seen_enc.add(node.encryption_key)
        if isinstance(node, LeafNode):
            if node.signature_key in seen_sig:
                raise InvalidWelcome("a signature key appears twice in the tree")
            seen_sig.add(node.signature_key)
            try:
                validate_leaf_node(
                    suite, node, expected_source=node.leaf_node_source, group_id=group_id,
                    leaf_index=x // 2, group_extensions=extensions, index=None,
                    credential_check=credential_check, now=now,
                    check_lifetimes=check_lifetimes,
                )
            except InvalidLeafNode as exc:
                raise InvalidWelcome(f"leaf {x // 2} of the tree: {exc}") from None
            if node.leaf_node_source not in (SOURCE_KEY_PACKAGE, SOURCE_UPDATE, SOURCE_COMMIT):
                raise InvalidWelcome("unknown leaf node source")


def join_from_welcome(
    welcome: Welcome,
    bundle: KeyPackageBundle,
    *,
    ratchet_tree: bytes | None,
    external_psks: Mapping[bytes, bytes],
    credential_check: CredentialCheck,
    now: int,
    check_tree_lifetimes: bool = True,
) -> GroupState:
    """Decrypt a Welcome and build the joiner's group state."""
    require_time(now)
    kp = bundle.key_package
    suite, secrets, psk_secret, gi = _open_welcome(welcome, bundle, external_psks)
    ctx = gi.group_context
    tree_data = find_extension(gi.extensions, EXT_RATCHET_TREE)
    if tree_data is None:
        tree_data = ratchet_tree
    if tree_data is None:
        raise InvalidWelcome("no ratchet tree in the Welcome and none supplied")
    tree = RatchetTree.decode(suite, tree_data)
    signer = tree.leaf(gi.signer)
    if signer is None:
        raise InvalidWelcome("GroupInfo signer is not a member")
    if not suite.verify_with_label(signer.signature_key, b"GroupInfoTBS", gi.tbs(),
                                   gi.signature):
        raise MlsSignatureError("GroupInfo signature does not verify")
    if tree.tree_hash() != ctx.tree_hash:
        raise InvalidWelcome("ratchet tree does not match the GroupInfo tree hash")
    # §12.4.3.1: "a leaf whose LeafNode is identical to the one in the KeyPackage".
    mine = kp.leaf_node.encoded()
    my_leaf = next((i for i, leaf in tree.members() if leaf.encoded() == mine), None)
    if my_leaf is None:
        raise InvalidWelcome("our leaf is not in the ratchet tree")
    try:
        check_lifetime(kp.leaf_node, now)
    except InvalidLeafNode:
        raise InvalidWelcome("Welcome uses our KeyPackage outside its lifetime") from None
    validate_tree(suite, tree, ctx.group_id, ctx.extensions, credential_check, now=now,
                  check_lifetimes=check_tree_lifetimes)
    private_keys: dict[int, tuple[bytes, bytes]] = {
        2 * my_leaf: (kp.leaf_node.encryption_key, bundle.encryption_priv)
    }
    if secrets.path_secret is not None:
        n = tree.n_leaves
        lca = tm.common_ancestor(2 * my_leaf, 2 * gi.signer)
        nodes = [lca] + [p for p in tm.direct_path(lca, n) if tree.nodes[p] is not None]
        result = derive_path_from(suite, tree, nodes, secrets.path_secret)
        for x, priv in result.private_keys.items():
            node = tree.nodes[x]
            if node is not None:
                private_keys[x] = (node.encryption_key, priv)
    epoch = ks.epoch_from_joiner(suite, secrets.joiner_secret, psk_secret, ctx.encoded())
    if not suite.verify_mac(epoch.confirmation_key, ctx.confirmed_transcript_hash,
                            gi.confirmation_tag):
        raise MlsSignatureError("GroupInfo confirmation tag does not verify")
    state = GroupState(
        suite=suite,
        context=ctx,
        tree=tree,
        interim_transcript_hash=ks.interim_transcript_hash(
            suite, ctx.confirmed_transcript_hash, gi.confirmation_tag),
        confirmation_tag=gi.confirmation_tag,
        secrets=epoch,
        secret_tree=SecretTree(suite, epoch.encryption_secret, tree.n_leaves),
        my_leaf=my_leaf,
        sig_priv=bundle.signature_priv,
        private_keys=private_keys,
    )
    state.remember_resumption_psk()
    return state


def _open_welcome(welcome: Welcome, bundle: KeyPackageBundle,
                  external_psks: Mapping[bytes, bytes]
                  ) -> tuple[CipherSuite, GroupSecrets, bytes | None, GroupInfo]:
    """RFC 9420 §12.4.3.1, steps 1–4: find our entry, decrypt the GroupSecrets, derive
    the welcome key and decrypt the GroupInfo (not yet verified: its signer is a leaf
    of the tree)."""
    kp = bundle.key_package
    if welcome.cipher_suite != kp.cipher_suite:
        raise InvalidWelcome("Welcome cipher suite does not match the KeyPackage")
    if not is_supported(welcome.cipher_suite):
        raise UnsupportedCipherSuite(f"cipher suite {welcome.cipher_suite} is not supported")
    suite = get_suite(welcome.cipher_suite)
    ref = kp.ref(suite)
    entry = next((s for s in welcome.secrets if s.new_member == ref), None)
    if entry is None:
        raise NoMatchingKeyPackage("Welcome holds no secrets for this KeyPackage")
    ct = entry.encrypted_group_secrets
    plain = suite.decrypt_with_label(bundle.init_priv, b"Welcome", welcome.encrypted_group_info,
                                     ct.kem_output, ct.ciphertext)
    secrets = decode_all(plain, GroupSecrets.read)
    psks = []
    for psk_id in secrets.psks:
        psks.append((psk_id, _psk_for_joiner(psk_id, external_psks)))
    psk_secret = ks.psk_secret(suite, psks) if psks else None
    welcome_secret = ks.welcome_secret(suite, secrets.joiner_secret, psk_secret)
    key, nonce = ks.welcome_key_nonce(suite, welcome_secret)
    gi = decode_all(suite.open(key, nonce, b"", welcome.encrypted_group_info), GroupInfo.read)
    ctx = gi.group_context
    if ctx.cipher_suite != suite.suite_id or ctx.version != MLS10:
        raise InvalidWelcome("GroupInfo cipher suite or version does not match")
    return suite, secrets, psk_secret, gi


@dataclass(frozen=True, slots=True)
class WelcomePreview:
    """What a Welcome says before the ratchet tree is known (:func:`preview_welcome`)."""

    group_id: bytes
    epoch: int
    cipher_suite: int
    tree_included: bool            # the GroupInfo carries the ratchet_tree extension
    _suite: CipherSuite
    _exporter_secret: bytes

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """The new epoch's MLS-Exporter (RFC 9420 §8.5), as ``Group.export_secret``
        will give it once joined."""
        return ks.export_secret(self._suite, self._exporter_secret, label, context, length)


def preview_welcome(welcome: Welcome, bundle: KeyPackageBundle, *,
                    external_psks: Mapping[bytes, bytes] | None = None) -> WelcomePreview:
    """Open a Welcome far enough to learn its group, epoch and exporter secret, for a
    joiner whose Welcome omits the ratchet tree (RFC 9420 §12.4.3.3: the tree "can be
    provided by other means") and who needs the epoch's exporter to fetch it.

    Checked: the GroupSecrets decrypt with our init key, the GroupInfo decrypts under
    the welcome key, and its confirmation tag verifies with the epoch's confirmation key
    (so the GroupContext comes from a holder of the joiner secret). *Not* checked, since
    both need the tree (§12.4.3.1): the GroupInfo signature and the tree hash. The
    preview is therefore only a key to look for the tree with; nothing it says is to be
    trusted until :func:`join_from_welcome` (``Group.join(..., ratchet_tree=...)``) has
    done every check. Pure: no state is kept or changed."""
    suite, secrets, psk_secret, gi = _open_welcome(welcome, bundle, external_psks or {})
    ctx = gi.group_context
    epoch = ks.epoch_from_joiner(suite, secrets.joiner_secret, psk_secret, ctx.encoded())
    if not suite.verify_mac(epoch.confirmation_key, ctx.confirmed_transcript_hash,
                            gi.confirmation_tag):
        raise MlsSignatureError("GroupInfo confirmation tag does not verify")
    tree_included = find_extension(gi.extensions, EXT_RATCHET_TREE) is not None
    return WelcomePreview(ctx.group_id, ctx.epoch, suite.suite_id, tree_included, suite,
                          epoch.exporter_secret)


def _psk_for_joiner(psk_id: PreSharedKeyID, external: Mapping[bytes, bytes]) -> bytes:
    if psk_id.psktype == PSK_EXTERNAL:
        secret = external.get(psk_id.psk_id)
        if secret is not None:
            return secret
    raise MissingPsk("the Welcome needs a pre-shared key this client does not hold")

__all__ = [
    "KeyPackageBundle",
    "WelcomePreview",
    "join_from_welcome",
    "make_key_package",
    "preview_welcome",
    "validate_tree",
]
