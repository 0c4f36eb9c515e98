"""The error tree of ``veil.core``.

Every failure a user or a peer can trigger with the bytes they send is one of these
typed exceptions with a one-line message. Higher layers (server, client, CLI) derive
their own trees from :class:`VeilError` and map them to HTTP statuses or exit codes by
the stable ``code`` attribute.
"""

from __future__ import annotations


class VeilError(Exception):
    """Root of every error Veil raises on purpose."""

    code = "veil_error"


class CoreError(VeilError):
    """A cryptographic protocol or wire format rejected its input."""

    code = "core_error"


class MalformedMessage(CoreError):
    """Bytes that do not decode as the structure they claim to be."""

    code = "malformed_message"


class UnsupportedVersion(MalformedMessage):
    """A well-formed structure of a version this build does not speak."""

    code = "unsupported_version"


class InvalidSignature(CoreError):
    """A signature did not verify under the key it claims."""

    code = "invalid_signature"


class UntrustedIdentity(CoreError):
    """The peer's identity key is not the one this session or contact belongs to."""

    code = "untrusted_identity"


class DuplicateMessage(CoreError):
    """A message whose key was already used: a replay or a duplicate delivery."""

    code = "duplicate_message"


class DecryptionFailed(CoreError):
    """Authentication of a ciphertext failed: tampered, truncated or for someone else."""

    code = "decryption_failed"


class TooManySkippedMessages(CoreError):
    """A message claims a counter further ahead than the skipped-key bound allows."""

    code = "too_many_skipped"


class UnknownPreKey(CoreError):
    """An initial message names a prekey this device does not hold (used or never issued)."""

    code = "unknown_prekey"


class ExpiredCertificate(CoreError):
    """A sender or server certificate is outside its validity period."""

    code = "expired_certificate"

__all__ = [
    "CoreError",
    "DecryptionFailed",
    "DuplicateMessage",
    "ExpiredCertificate",
    "InvalidSignature",
    "MalformedMessage",
    "TooManySkippedMessages",
    "UnknownPreKey",
    "UnsupportedVersion",
    "UntrustedIdentity",
    "VeilError",
]
