"""Request bodies of the HTTP API (docs/server.md, "API"), as the server decodes them.

Every request type forbids unknown fields and treats an absent optional field
(``UNSET``) differently from ``null``, which no request field accepts. The list and
size bounds that an operator configures (envelope size, devices per account, prekeys
per upload) are the defaults here; :class:`veil.protocol.codec.Codec` binds a server's
own limits into the types it decodes with and documents.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from veil.protocol.fields import DeviceId, KeyId, b64

__all__ = [
    "ACCESS_KEY_BYTES",
    "IDENTITY_KEY_BYTES",
    "KEM_PREKEY_BYTES",
    "ONE_TIME_PREKEY_BYTES",
    "SIGNED_PREKEY_BYTES",
    "DeviceApprovalUpload",
    "DeviceLink",
    "EnvelopeItem",
    "GroupCommit",
    "GroupCreate",
    "GroupPost",
    "KeyPackageUpload",
    "OneTimeKemPrekey",
    "OneTimePrekey",
    "PrekeyUpload",
    "ProofOfWork",
    "ProvisioningOpen",
    "ProvisioningPost",
    "Registration",
    "RelayedSubmission",
    "Request",
    "SealedAccess",
    "Submission",
    "UsernameRequest",
    "relayed_submission_max",
]

# Bounds of the key records the server stores without parsing them all (it verifies
# the signed ones): (fewest, most) bytes.
IDENTITY_KEY_BYTES = (32, 256)
SIGNED_PREKEY_BYTES = (32, 1024)
ONE_TIME_PREKEY_BYTES = (32, 512)
KEM_PREKEY_BYTES = (1184, 4096)
ACCESS_KEY_BYTES = 16

# Defaults of the configurable bounds (ServerConfig has the same).
DEFAULT_MAX_PREKEYS = 200
DEFAULT_MAX_DEVICES = 16
DEFAULT_MAX_ENVELOPE = 256 * 1024
DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_GROUP_MESSAGE = 256 * 1024
# MLS (issue 11 §1): KeyPackages per upload and bytes per KeyPackage (the server's
# configuration may set lower bounds; it checks those itself).
MAX_KEY_PACKAGES = 100
KEY_PACKAGE_BYTES = (64, 16 * 1024)
GROUP_ID_BYTES = (16, 32)
VERIFIER_BYTES = 32
MAX_EPOCH = (1 << 53) - 1

def relayed_submission_max(max_body_bytes: int) -> int:
    """The most bytes of submission that fit in a body of ``max_body_bytes`` with its
    JSON around it."""
    return 3 * ((max_body_bytes - 64) // 4)


AccessKey = Annotated[bytes, b64(ACCESS_KEY_BYTES, ACCESS_KEY_BYTES,
                                 "HMAC-SHA256(profile_key, 'veil access key v1')[:16]")]
IdentityKey = Annotated[bytes, b64(*IDENTITY_KEY_BYTES, "the device's identity key")]
SignedPrekey = Annotated[bytes, b64(*SIGNED_PREKEY_BYTES,
                                    "signed X25519 prekey record, verified")]
LastResortKemPrekey = Annotated[bytes, b64(*KEM_PREKEY_BYTES,
                                           "signed last-resort ML-KEM-768 prekey, verified")]
OneTimePrekeyBytes = Annotated[bytes, b64(*ONE_TIME_PREKEY_BYTES,
                                          "one-time X25519 prekey record")]
OneTimeKemPrekeyBytes = Annotated[bytes, b64(*KEM_PREKEY_BYTES,
                                             "signed one-time ML-KEM-768 prekey, verified")]
Token = Annotated[bytes, b64(32, 32, "device credential; omitted: the server issues one")]
RegistrationId = Annotated[int, Meta(ge=1, le=(1 << 31) - 1,
                                     description="random id clients use to detect reinstalls")]
Invite = Annotated[str, Meta(pattern="^[0-9a-f]{8,128}$", max_length=128,
                             description="invite token (invite-only servers)")]
UsernameInput = Annotated[str, Meta(pattern="^[A-Za-z0-9_]{3,32}$", max_length=32,
                                    description="unique username, case-insensitive")]
PowChallengeText = Annotated[str, Meta(pattern="^[A-Za-z0-9_.-]{1,200}$", max_length=200,
                                       description="the challenge as the server gave it")]
PowNonce = Annotated[str, Meta(pattern="^[0-9]{1,64}$", max_length=64,
                               description="decimal nonce: SHA-256(challenge ':' nonce) "
                                           "starts with the challenge's zero bits")]


class Request(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True,
              omit_defaults=True):
    """Base of every request body and client frame."""


class OneTimePrekey(Request, kw_only=True, frozen=True):
    key_id: KeyId
    key: OneTimePrekeyBytes


class OneTimeKemPrekey(Request, kw_only=True, frozen=True):
    key_id: KeyId
    key: OneTimeKemPrekeyBytes


class PrekeyUpload(Request, kw_only=True, frozen=True):
    """Prekeys to publish: the slots replace what is there, the lists append."""

    signed_prekey: SignedPrekey | UnsetType = UNSET
    last_resort_kem_prekey: LastResortKemPrekey | UnsetType = UNSET
    one_time_prekeys: Annotated[list[OneTimePrekey], Meta(max_length=DEFAULT_MAX_PREKEYS)] \
        | UnsetType = UNSET
    one_time_kem_prekeys: Annotated[list[OneTimeKemPrekey],
                                    Meta(max_length=DEFAULT_MAX_PREKEYS)] \
        | UnsetType = UNSET


class ProofOfWork(Request, kw_only=True, frozen=True):
    """A solved registration challenge (``GET /v1/accounts/challenge``; issue 13 §2)."""

    challenge: PowChallengeText
    nonce: PowNonce


class Registration(PrekeyUpload, kw_only=True, frozen=True):
    """A new account with its first device (and, optionally, its first prekeys)."""

    identity_key: IdentityKey
    registration_id: RegistrationId
    token: Token | UnsetType = UNSET
    username: UsernameInput | UnsetType = UNSET
    access_key: AccessKey | UnsetType = UNSET
    unrestricted_sealed: bool | UnsetType = UNSET
    invite: Invite | UnsetType = UNSET
    # Servers in registration mode "pow" ask for it; others ignore it.
    proof_of_work: ProofOfWork | UnsetType = UNSET


class UsernameRequest(Request, kw_only=True, frozen=True):
    username: UsernameInput


class SealedAccess(Request, kw_only=True, frozen=True):
    """Who may send sealed envelopes to this account."""

    access_key: AccessKey | UnsetType = UNSET
    unrestricted_sealed: bool


class EnvelopeItem(Request, kw_only=True, frozen=True):
    device_id: DeviceId
    envelope: Annotated[bytes, b64(1, DEFAULT_MAX_ENVELOPE, "opaque sealed envelope")]


class Submission(Request, kw_only=True, frozen=True):
    """One envelope per device of the recipient account."""

    messages: Annotated[list[EnvelopeItem], Meta(min_length=1, max_length=DEFAULT_MAX_DEVICES)]


class RelayedSubmission(Request, kw_only=True, frozen=True):
    """A sealed submission relayed by a mixnet provider."""

    submission: Annotated[bytes, b64(1, relayed_submission_max(DEFAULT_MAX_BODY),
                                     "veil.core.submission encoding of a sealed submission")]


KeyPackageBytes = Annotated[bytes, b64(*KEY_PACKAGE_BYTES,
                                       "an MLS KeyPackage (RFC 9420 §10), bare or as an "
                                       "MLSMessage; parsed and verified")]
GroupId = Annotated[bytes, b64(*GROUP_ID_BYTES, "the MLS group id, random")]
Verifier = Annotated[bytes, b64(VERIFIER_BYTES, VERIFIER_BYTES,
                                "SHA-256 of an epoch's read or write capability")]
Epoch = Annotated[int, Meta(ge=0, le=MAX_EPOCH, description="MLS epoch")]
GroupMessageBytes = Annotated[bytes, b64(1, DEFAULT_MAX_GROUP_MESSAGE,
                                         "an MLS message (MLSMessage), opaque")]


class KeyPackageUpload(Request, kw_only=True, frozen=True):
    """One-time KeyPackages to append, and optionally a last-resort one (it replaces the
    device's last-resort one of its cipher suite)."""

    key_packages: Annotated[list[KeyPackageBytes], Meta(max_length=MAX_KEY_PACKAGES)] \
        | UnsetType = UNSET
    last_resort: KeyPackageBytes | UnsetType = UNSET


class GroupCreate(Request, kw_only=True, frozen=True):
    """A group mailbox at epoch 0 with the verifiers of epoch 0's capabilities."""

    group_id: GroupId
    read_verifier: Verifier
    write_verifier: Verifier


class GroupPost(Request, kw_only=True, frozen=True):
    """An application message (or proposal) of the current epoch."""

    epoch: Epoch
    message: GroupMessageBytes


class GroupCommit(Request, kw_only=True, frozen=True):
    """The commit that ends ``epoch``, with the verifiers of the next epoch."""

    epoch: Epoch
    message: GroupMessageBytes
    next_read_verifier: Verifier
    next_write_verifier: Verifier


# --- linked devices (docs/devices.md) ---------------------------------------------------
APPROVAL_BYTES = (97, 97)
DEFAULT_MAX_PROVISIONING = 768 * 1024
Approval = Annotated[bytes, b64(*APPROVAL_BYTES, "device approval signed by the account's "
                                                 "identity (veil.core.devices)")]
EphemeralKey = Annotated[bytes, b64(32, 32, "the new device's ephemeral X25519 public key")]


class DeviceApprovalUpload(Request, kw_only=True, frozen=True):
    """This device's own approval (a first device signs its own after registering)."""

    approval: Approval


class DeviceLink(PrekeyUpload, kw_only=True, frozen=True):
    """A new device of an existing account, authorised by the approval an existing
    device signed for it (carried inside the provisioning message), with its prekeys."""

    device_id: DeviceId
    registration_id: RegistrationId
    identity_key: IdentityKey
    token: Annotated[bytes, b64(32, 32, "the new device's credential (only its hash is "
                                        "stored)")]
    approval: Approval


class ProvisioningOpen(Request, kw_only=True, frozen=True):
    """Open an anonymous provisioning channel for a new device."""

    public_key: EphemeralKey


class ProvisioningPost(Request, kw_only=True, frozen=True):
    """The one provisioning message, encrypted to the channel's key (opaque here)."""

    message: Annotated[bytes, b64(1, DEFAULT_MAX_PROVISIONING,
                                  "veil.core.provisioning message, opaque")]
