"""Leaf node, KeyPackage and proposal-list validation (RFC 9420 §7.3, §10.1, §12.2).

Time is an argument (seconds since the Unix epoch), never read from a clock. The
application plugs its own credential policy in through :data:`CredentialCheck`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from veil.core.mls.crypto import CipherSuite
from veil.core.mls.errors import (
    CredentialRejected,
    InvalidKeyPackage,
    InvalidLeafNode,
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

CredentialCheck = Callable[[Credential, bytes], bool]
"""Decides whether ``credential`` may speak for ``signature_key``."""


def basic_credential_check(credential: Credential, signature_key: bytes) -> bool:
    """The default policy: any non-empty basic credential."""
    return credential.credential_type == CREDENTIAL_BASIC and bool(credential.identity)


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

    __slots__ = ("_added_enc", "_added_sig", "_gone_enc", "_gone_sig", "_tree")

    def __init__(self, tree: RatchetTree) -> None:
        self._tree = tree
        self._added_enc: set[bytes] = set()
        self._added_sig: set[bytes] = set()
        self._gone_enc: Counter[bytes] = Counter()
        self._gone_sig: Counter[bytes] = Counter()

    @staticmethod
    def of(tree: RatchetTree) -> TreeIndex:
        return TreeIndex(tree)

    def has_encryption_key(self, key: bytes) -> bool:
        return key in self._added_enc or self._tree.enc_keys[key] > self._gone_enc[key]

    def has_signature_key(self, key: bytes) -> bool:
        return key in self._added_sig or self._tree.sig_keys[key] > self._gone_sig[key]

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
        self._gone_enc[leaf.encryption_key] += 1
        self._gone_sig[leaf.signature_key] += 1

    def remember(self, leaf: LeafNode) -> None:
        self._added_enc.add(leaf.encryption_key)
        self._added_sig.add(leaf.signature_key)


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
    now: int | None,
) -> None:
    """RFC 9420 §7.3 checks for a leaf about to enter the tree."""
    if not credential_check(leaf.credential, leaf.signature_key):
        raise CredentialRejected("credential refused by the application")
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
    if leaf.leaf_node_source == SOURCE_KEY_PACKAGE and now is not None:
        lt = leaf.lifetime
        if lt is None or not lt.not_before <= now <= lt.not_after:
            raise InvalidLeafNode("leaf node lifetime does not cover the current time")
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


def validate_key_package(
    suite: CipherSuite,
    kp: KeyPackage,
    *,
    group_extensions: list[Extension] | None = None,
    index: TreeIndex | None = None,
    credential_check: CredentialCheck = basic_credential_check,
    now: int | None = None,
) -> None:
    """RFC 9420 §10.1 checks for a KeyPackage."""
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
