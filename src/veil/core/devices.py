"""Device approvals: which devices an account's identity vouches for (issue 11 §2).

An account has one identity (one safety number) shared by its devices. Each device has
its own prekeys, registration id and credentials, so a server could add a device slot
of its own to an account and have contacts encrypt to it. An approval prevents that:
an Ed25519 signature by the account's identity over

    "veil device approval v1" || account id (16) || device id (u32)
        || registration id (u32) || approved at (u64, ms)

The server stores the approval opaquely with the device and hands it out with the
device's prekey bundle; a contact refuses a device whose approval does not verify
under the identity the bundle presents (:func:`check_device`). Accounts registered
before approvals existed have none for their first device, which contacts tolerate
for device 1 only (:data:`LEGACY_DEVICE`).

Wire form: ``version (1) || account id (16) || device id (u32) || registration id
(u32) || approved at (u64) || signature (64)``: 97 bytes, canonical (one spelling).
Nothing here reads a clock: the approval time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.encoding import Reader, Writer
from veil.core.errors import InvalidSignature, UnsupportedVersion
from veil.core.keys import IdentityKeyPair, IdentityPublicKey

APPROVAL_LABEL = b"veil device approval v1"
APPROVAL_VERSION = 1
APPROVAL_SIZE = 1 + 16 + 4 + 4 + 8 + 64
ACCOUNT_ID_LEN = 16
LEGACY_DEVICE = 1            # may lack an approval (registered before approvals)
_MAX_U32 = (1 << 32) - 1
_MAX_U64 = (1 << 64) - 1


class UnapprovedDevice(InvalidSignature):
    """A device the account's identity did not approve (or whose approval is for
    another account, device, or registration)."""

    code = "unapproved_device"


def _signed_data(account_id: bytes, device_id: int, registration_id: int,
                 approved_at: int) -> bytes:
    return (APPROVAL_LABEL + account_id + device_id.to_bytes(4, "big")
            + registration_id.to_bytes(4, "big") + approved_at.to_bytes(8, "big"))


def _check_fields(account_id: bytes, device_id: int, registration_id: int,
                  approved_at: int) -> None:
    if len(account_id) != ACCOUNT_ID_LEN:
        raise ValueError("an account id is 16 bytes")
    for name, value, high in (("device id", device_id, _MAX_U32),
                              ("registration id", registration_id, _MAX_U32),
                              ("approval time", approved_at, _MAX_U64)):
        if not 0 <= value <= high:
            raise ValueError(f"{name} out of range")


@dataclass(frozen=True, slots=True)
class DeviceApproval:
    """One identity-signed approval. Parsing does not verify: call :meth:`verify`."""

    account_id: bytes
    device_id: int
    registration_id: int
    approved_at: int          # ms since 1970, as the approving device's clock said
    signature: bytes

    @classmethod
    def sign(cls, identity: IdentityKeyPair, account_id: bytes, device_id: int,
             registration_id: int, approved_at: int) -> DeviceApproval:
        _check_fields(account_id, device_id, registration_id, approved_at)
        data = _signed_data(account_id, device_id, registration_id, approved_at)
        return cls(account_id, device_id, registration_id, approved_at, identity.sign(data))

    def to_bytes(self) -> bytes:
        return (Writer().u8(APPROVAL_VERSION).raw(self.account_id).u32(self.device_id)
                .u32(self.registration_id).u64(self.approved_at).raw(self.signature)
                .finish())

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceApproval:
        r = Reader(data, "device approval")
        if r.u8() != APPROVAL_VERSION:
            raise UnsupportedVersion("device approval: unknown version")
        approval = cls(r.raw(ACCOUNT_ID_LEN), r.u32(), r.u32(), r.u64(), r.raw(64))
        r.done()
        return approval

    def verify(self, identity: IdentityPublicKey, account_id: bytes, device_id: int,
               registration_id: int) -> None:
        """Raise :class:`UnapprovedDevice` unless this approves exactly this device of
        this account with this registration id, signed by ``identity``."""
        if (self.account_id, self.device_id, self.registration_id) != \
                (account_id, device_id, registration_id):
            raise UnapprovedDevice("device approval: names another account, device or "
                                   "registration")
        try:
            identity.verify(self.signature, _signed_data(
                account_id, device_id, registration_id, self.approved_at), "device approval")
        except InvalidSignature:
            raise UnapprovedDevice("device approval: signature does not verify") from None


def check_device(identity: IdentityPublicKey, account_id: bytes, device_id: int,
                 registration_id: int, approval: bytes | None) -> DeviceApproval | None:
    """Judge one device of a directory answer: its approval, verified, or None for a
    legacy first device without one. Raises :class:`UnapprovedDevice` (or a
    ``MalformedMessage`` for bytes that are not an approval) otherwise."""
    if approval is None:
        if device_id == LEGACY_DEVICE:
            return None
        raise UnapprovedDevice(f"device {device_id} has no approval from the account's "
                               "identity")
    parsed = DeviceApproval.from_bytes(approval)
    parsed.verify(identity, account_id, device_id, registration_id)
    return parsed

__all__ = [
    "APPROVAL_LABEL",
    "APPROVAL_SIZE",
    "LEGACY_DEVICE",
    "DeviceApproval",
    "UnapprovedDevice",
    "check_device",
]
