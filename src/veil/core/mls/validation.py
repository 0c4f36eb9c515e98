"""Leaf node, KeyPackage and proposal-list validation (RFC 9420 §5.3.1, §7.3, §10.1, §12.2).

Time is an argument (seconds since the Unix epoch), never read from a clock, and it is
required: no default and no ``None`` stands for "skip the lifetime check" (§7.3 makes
the check a MUST for what a client sends). The application plugs its own credential
policy in through :data:`CredentialCheck`; it sees the credential a leaf replaces, so
that it can decide whether the new one is a valid successor (§5.3.1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidKeyPackage,
    InvalidLeafNode,
    InvalidState,
    MissingCapability,
)
from veil.core.mls.leaf import (
    CREDENTIAL_BASIC,
    EXT_REQUIRED_CAPABILITIES,
    MLS10,
    SOURCE_KEY_PACKAGE,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
    RequiredCapabilities,
    find_extension,
    has_unique_extension_types,
)
from veil.core.mls.tree import RatchetTree

CredentialCheck = Callable[[Credential, bytes, Credential | None], bool]
"""``check(credential, signature_key, previous)``: may ``credential`` speak for
``signature_key``? ``previous`` is the credential of the leaf it replaces (an Update, a
committer's UpdatePath leaf, the leaf removed by a resync external commit), ``None`` for
a leaf new to the group (Add, Welcome tree, external join). When ``previous`` is given,
returning True also says that ``credential`` is a valid successor of it (RFC 9420
§5.3.1)."""


def basic_credential_check(
    credential: Credential, signature_key: bytes, previous: Credential | None = None
) -> bool:
    """The default policy: any non-empty basic credential, and no change of identity."""
    if credential.credential_type != CREDENTIAL_BASIC or not credential.identity:
        return False
    return previous is None or previous == credential


def require_time(now: object) -> int:
    """``now`` as seconds since the Unix epoch; anything else is an API misuse."""
    if not isinstance(now, int) or isinstance(now, bool) or now < 0:
        raise InvalidState("now must be the time in whole seconds since the Unix epoch")
    return now


def check_lifetime(leaf: LeafNode, now: int) -> None:
    """RFC 9420 §7.3: a key-package leaf's lifetime must cover ``now``."""
    if leaf.leaf_node_source != SOURCE_KEY_PACKAGE:
        return
    lt = leaf.lifetime
    if lt is None or not lt.not_before <= require_time(now) <= lt.not_after:
        raise InvalidLeafNode("leaf node lifetime does not cover the current time")


def required_capabilities(extensions: list[Extension]) -> RequiredCapabilities | None:
    from veil.core.mls.codec import decode_all

    data = find_extension(extensions, EXT_REQUIRED_CAPABILITIES)
    if data is None:
        return None
    return decode_all(data, RequiredCapabilities.read)


class TreeIndex:
    """Keys in the tree plus pending changes, so uniqueness checks cost O(1) per leaf.

    Reads the census a :class:`RatchetTree` keeps current; ``forget``/``remember``
    record the effect of proposals not yet applied.
    """

    __slots__ = ("_added_cred", "_added_enc", "_added_sig", "_gone_cred", "_gone_enc",
                 "_gone_sig", "_tree", "_unique_creds")

    def __init__(self, tree: RatchetTree, unique_credentials: bool = True) -> None:
        self._tree = tree
        self._unique_creds = unique_credentials
        self._added_enc: set[bytes] = set()
        self._added_sig: set[bytes] = set()
        self._added_cred: set[Credential] = set()
        self._gone_enc: Counter[bytes] = Counter()
        self._gone_sig: Counter[bytes] = Counter()
        self._gone_cred: Counter[Credential] = Counter()

    @staticmethod
    def of(tree: RatchetTree, unique_credentials: bool = True) -> TreeIndex:
        """``unique_credentials=False``: the application lets one credential hold several
        leaves (its own notion of "the same client", RFC 9420 §12.2)."""
        return TreeIndex(tree, unique_credentials)

    def has_encryption_key(self, key: bytes) -> bool:
        return key in self._added_enc or self._tree.enc_keys[key] > self._gone_enc[key]

    def has_signature_key(self, key: bytes) -> bool:
        return key in self._added_sig or self._tree.sig_keys[key] > self._gone_sig[key]

    def has_credential(self, cred: Credential) -> bool:
        if not self._unique_creds:
            return False
        return cred in self._added_cred or self._tree.creds[cred] > self._gone_cred[cred]

    @property
    def credential_types(self) -> set[int]:
        return {t for t, n in self._tree.cred_types.items() if n > 0}

    @property
    def supported_credentials(self) -> set[int] | None:
        sets = [c for c, n in self._tree.cred_caps.items() if n > 0]
        if not sets:
            return None
        out = set(sets[0])
        for c in sets[1:]:
            out &= c
        return out

    def forget(self, leaf: LeafNode) -> None:
        """``leaf`` leaves the tree (Remove, or the leaf an Update replaces)."""
        self._forget(leaf, 1)

    def unforget(self, leaf: LeafNode) -> None:
        """Undo :meth:`forget` (the leaf stays after all, or is only set aside)."""
        self._forget(leaf, -1)

    def _forget(self, leaf: LeafNode, delta: int) -> None:
        self._gone_enc[leaf.encryption_key] += delta
        self._gone_sig[leaf.signature_key] += delta
        self._gone_cred[leaf.credential] += delta

    def remember(self, leaf: LeafNode) -> None:
        self._added_enc.add(leaf.encryption_key)
        self._added_sig.add(leaf.signature_key)
        self._added_cred.add(leaf.credential)


def validate_leaf_node(
    suite: CipherSuite,
    leaf: LeafNode,
    *,
    expected_source: int,
    group_id: bytes,
    leaf_index: int,
    group_extensions: list[Extension],
    index: TreeIndex | None,
    credential_check: CredentialCheck,
    now: int,
    previous: LeafNode | None = None,
    check_lifetimes: bool = True,
) -> None:
    """RFC 9420 §7.3 checks for a leaf about to enter the tree.

    ``previous`` is the leaf it replaces (Update, UpdatePath, resync): its credential goes
    to the credential check, and the encryption key must change (§7.3, §12.4.2), or the
    leaf would get no post-compromise security. ``index`` (the tree with ``previous``
    already forgotten) makes keys and credentials unique among the members: one leaf per
    client, as the default notion of "the same client" is an equal credential (§12.2).
    ``check_lifetimes=False`` is only for a joiner's explicit choice about leaves already
    in a tree it receives (§7.3 makes that check a recommendation, not a requirement).
    """
    old_cred = previous.credential if previous is not None else None
    if not credential_check(leaf.credential, leaf.signature_key, old_cred):
        raise CredentialRejected("credential refused by the application")
    if previous is not None and leaf.encryption_key == previous.encryption_key:
        raise InvalidLeafNode("new leaf reuses the encryption key of the leaf it replaces")
    if not leaf.verify_signature(suite, group_id, leaf_index):
        raise InvalidLeafNode("leaf node signature does not verify")
    if leaf.leaf_node_source != expected_source:
        raise InvalidLeafNode("leaf node source does not fit its use")
    caps = leaf.capabilities
    if MLS10 not in caps.versions or suite.suite_id not in caps.cipher_suites:
        raise MissingCapability("leaf does not support the group's version or cipher suite")
    required = required_capabilities(group_extensions)
    if required is not None and not required.satisfied_by(caps):
        raise MissingCapability("leaf lacks a capability the group requires")
    for ext in group_extensions:
        if not caps.supports_extension(ext.extension_type):
            raise MissingCapability("leaf does not support a group context extension")
    if not has_unique_extension_types(leaf.extensions):
        raise InvalidLeafNode("leaf node repeats an extension type")
    for ext in leaf.extensions:
        if not caps.supports_extension(ext.extension_type):
            raise InvalidLeafNode("leaf node carries an extension it does not support")
    if not caps.supports_credential(leaf.credential.credential_type):
        raise InvalidLeafNode("leaf does not support its own credential type")
    if check_lifetimes:
        check_lifetime(leaf, now)
    if index is not None:
        supported = index.supported_credentials
        if supported is not None and leaf.credential.credential_type not in supported:
            raise MissingCapability("a member does not support this credential type")
        if not index.credential_types <= set(caps.credentials):
            raise MissingCapability("leaf does not support a member's credential type")
        if index.has_encryption_key(leaf.encryption_key):
            raise InvalidLeafNode("encryption key already used in the tree")
        if index.has_signature_key(leaf.signature_key):
            raise InvalidLeafNode("signature key already used in the tree")
        if index.has_credential(leaf.credential):
            raise InvalidLeafNode("another member already presents this credential")


def validate_key_package(
    suite: CipherSuite,
    kp: KeyPackage,
    *,
    group_extensions: list[Extension] | None = None,
    index: TreeIndex | None = None,
    credential_check: CredentialCheck = basic_credential_check,
    now: int,
) -> None:
    """RFC 9420 §10.1 checks for a KeyPackage (lifetime included: ``now`` is required)."""
    if kp.version != MLS10:
        raise InvalidKeyPackage("KeyPackage protocol version is not MLS 1.0")
    if kp.cipher_suite != suite.suite_id:
        raise InvalidKeyPackage("KeyPackage cipher suite does not match the group")
    if not suite.verify_with_label(
        kp.leaf_node.signature_key, b"KeyPackageTBS", kp.tbs(), kp.signature
    ):
        raise InvalidKeyPackage("KeyPackage signature does not verify")
    if kp.init_key == kp.leaf_node.encryption_key:
        raise InvalidKeyPackage("KeyPackage init key equals its encryption key")
    if not has_unique_extension_types(kp.extensions):
        raise InvalidKeyPackage("KeyPackage repeats an extension type")
    try:
        validate_leaf_node(
            suite, kp.leaf_node, expected_source=SOURCE_KEY_PACKAGE, group_id=b"",
            leaf_index=0, group_extensions=group_extensions or [], index=index,
            credential_check=credential_check, now=now,
        )
    except InvalidLeafNode as exc:
        raise InvalidKeyPackage(f"KeyPackage leaf node: {exc}") from None

__all__ = [
    "CredentialCheck",
    "TreeIndex",
    "basic_credential_check",
    "check_lifetime",
    "require_time",
    "required_capabilities",
    "validate_key_package",
    "validate_leaf_node",
]
