"""The error tree of ``veil.core.mls`` (RFC 9420).

Every failure a peer can trigger with the bytes it sends is one of these typed
exceptions, each with a stable ``code``. Decoders of untrusted bytes raise only
:class:`MlsDecodeError`.
"""

from __future__ import annotations

from veil.core.errors import (
    CoreError,
    DecryptionFailed,
    DuplicateMessage,
    InvalidSignature,
    MalformedMessage,
    TooManySkippedMessages,
    UntrustedIdentity,
)


class MlsError(CoreError):
    """Root of every error raised by the MLS library."""

    code = "mls_error"


class MlsDecodeError(MlsError, MalformedMessage):
    """Bytes that do not decode as the MLS structure they claim to be (RFC 9420 §2.1)."""

    code = "mls_decode_error"


class UnsupportedCipherSuite(MlsError):
    """A cipher suite this build does not implement."""

    code = "mls_unsupported_cipher_suite"


class InvalidTree(MlsError):
    """A ratchet tree failed validation (tree hash, parent hash, structure)."""

    code = "mls_invalid_tree"


class InvalidLeafNode(MlsError):
    """A leaf node failed validation (RFC 9420 §7.3)."""

    code = "mls_invalid_leaf_node"


class InvalidKeyPackage(MlsError):
    """A KeyPackage failed validation (RFC 9420 §10.1)."""

    code = "mls_invalid_key_package"


class InvalidProposal(MlsError):
    """A proposal or proposal list is not valid for this group (RFC 9420 §12.2)."""

    code = "mls_invalid_proposal"


class InvalidCommit(MlsError):
    """A Commit failed validation (RFC 9420 §12.4)."""

    code = "mls_invalid_commit"


class InvalidWelcome(MlsError):
    """A Welcome or GroupInfo failed validation (RFC 9420 §12.4.3)."""

    code = "mls_invalid_welcome"


class NoMatchingKeyPackage(InvalidWelcome):
    """A Welcome that holds no secrets for any of our KeyPackages."""

    code = "mls_no_matching_key_package"


class WrongGroup(MlsError):
    """A message for another group."""

    code = "mls_wrong_group"


class WrongEpoch(MlsError):
    """A message for an epoch this member cannot process."""

    code = "mls_wrong_epoch"


class UnknownSender(MlsError):
    """A message from a leaf that is blank or out of range, or an unsupported sender type."""

    code = "mls_unknown_sender"


class UnknownProposal(MlsError):
    """A Commit refers to a proposal this member has not received in this epoch."""

    code = "mls_unknown_proposal"


class MissingPsk(MlsError):
    """A pre-shared key this member does not hold."""

    code = "mls_missing_psk"


class MlsSignatureError(MlsError, InvalidSignature):
    """A signature, membership tag or confirmation tag did not verify."""

    code = "mls_bad_signature"


class MlsDecryptionError(MlsError, DecryptionFailed):
    """An AEAD or HPKE ciphertext did not authenticate."""

    code = "mls_decryption_failed"


class GenerationTooFar(MlsError, TooManySkippedMessages):
    """A secret-tree generation beyond the forward-ratchet bound (RFC 9420 §9.4)."""

    code = "mls_generation_too_far"


class KeyReused(MlsError, DuplicateMessage):
    """A secret-tree key already consumed or deleted: a replay or a stale message."""

    code = "mls_key_reused"


class CredentialRejected(MlsError, UntrustedIdentity):
    """The application's credential check refused a credential."""

    code = "mls_credential_rejected"


class MissingCapability(MlsError):
    """A member lacks a capability the group requires (RFC 9420 §11.1)."""

    code = "mls_missing_capability"


class NotAMember(MlsError):
    """This client is not (or no longer) a member of the group."""

    code = "mls_not_a_member"


class InvalidState(MlsError):
    """A serialised group state that does not restore, or an API misuse."""

    code = "mls_invalid_state"


class UnsupportedStateVersion(InvalidState):
    """A saved group state in a format this version does not read, or not this way."""

    code = "mls_unsupported_state_version"


class StateMismatch(InvalidState):
    """Saved parts that do not belong together: a hot part of another group, member or
    epoch than its slow part, or one part given for the other."""

    code = "mls_state_mismatch"


class ConfigMismatch(InvalidState):
    """A Group option passed on restore that contradicts the one the saved state holds."""

    code = "mls_config_mismatch"

__all__ = [
    "ConfigMismatch",
    "CredentialRejected",
    "GenerationTooFar",
    "InvalidCommit",
    "InvalidKeyPackage",
    "InvalidLeafNode",
    "InvalidProposal",
    "InvalidState",
    "InvalidTree",
    "InvalidWelcome",
    "KeyReused",
    "MissingCapability",
    "MissingPsk",
    "MlsDecodeError",
    "MlsDecryptionError",
    "MlsError",
    "MlsSignatureError",
    "NoMatchingKeyPackage",
    "NotAMember",
    "StateMismatch",
    "UnknownProposal",
    "UnknownSender",
    "UnsupportedCipherSuite",
    "UnsupportedStateVersion",
    "WrongEpoch",
    "WrongGroup",
]
