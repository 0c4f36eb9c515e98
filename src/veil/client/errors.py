"""The client's branch of the error tree: one clear line for everything a user can hit."""

from __future__ import annotations

from veil.core.errors import VeilError


class ClientError(VeilError):
    """A client-side operation failed for a reason the user can act on."""

    code = "client_error"


class StoreError(ClientError):
    code = "store_error"


class WrongPassphrase(StoreError):
    code = "wrong_passphrase"


class PassphraseRequired(StoreError):
    code = "passphrase_required"


class CorruptStore(StoreError):
    code = "corrupt_store"


class NotInitialised(StoreError):
    code = "not_initialised"


class AlreadyInitialised(StoreError):
    code = "already_initialised"


class ServerUnreachable(ClientError):
    code = "server_unreachable"


class SealedRefused(ServerUnreachable):
    """The server refused a sealed delivery (the recipient's access key changed, or a
    server that wants to learn the sender). The message stays in the outbox and goes
    later with credentials, sealed anew: never resent at once with credentials, which
    would name the sender of what was just offered sealed."""

    code = "sealed_refused"


class CertificateMismatch(ServerUnreachable):
    """The server's TLS certificate is not the one pinned with its URL (``veil init
    --pin``, veil.client.pinning): another server, or someone in between. Nothing was
    sent; like any unreachable server, what waits in the outbox stays there."""

    code = "certificate_mismatch"


class CertificateUntrusted(ServerUnreachable):
    """No pin, and the system's certificate authorities do not vouch for the server's
    TLS certificate (a self-signed server must be pinned)."""

    code = "certificate_untrusted"


class ServerRejected(ClientError):
    """The server answered with an error: its stable code and message are kept."""

    code = "server_rejected"

    def __init__(self, status: int, server_code: str, message: str,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(f"server refused ({status} {server_code}): {message}")
        self.status = status
        self.server_code = server_code
        self.details = details or {}


class UnknownUser(ClientError):
    code = "unknown_user"


class IdentityChanged(ClientError):
    """A verified contact's identity key changed: sending stops until re-verified."""

    code = "identity_changed"


class StoreRolledBack(StoreError):
    """A record (or the whole state) is older than the last one this store wrote."""

    code = "store_rolled_back"


class TrustRootMismatch(ClientError):
    """The server's sealed-sender trust root is not the one the user pinned."""

    code = "trust_root_mismatch"

# --- linked devices (docs/devices.md) ---------------------------------------------------
class UnapprovedDevice(ClientError):
    """A contact's device (or one of our own) that the account's identity did not
    approve: nothing is recorded for it or sent to it."""

    code = "unapproved_device"


class LinkFailed(ClientError):
    """Linking a device did not work (a bad or expired code, a refused approval)."""

    code = "link_failed"


class LinkCodeMismatch(LinkFailed):
    """The new device's key does not match the link code: a mistyped code,
    or someone in between (the server) substituted it. Nothing was sent."""

    code = "link_code_mismatch"


# --- groups (docs/groups.md, "The client") ---------------------------------------------
class UnknownGroup(ClientError):
    """No group of this device has that id or name."""

    code = "unknown_group"


class NotGroupMember(ClientError):
    """This device is no longer in the group, or the person named is not in it."""

    code = "not_group_member"


class NotGroupAdmin(ClientError):
    """Only an admin may add, remove, rename or promote."""

    code = "not_group_admin"


class GroupBusy(ClientError):
    """A commit lost its epoch too many times in a row (others kept committing)."""

    code = "group_busy"


class GroupStuck(GroupBusy):
    """A group's mailbox does not let this device past its epoch (the commit that ended
    it withheld or refused, or the read capability refused): nothing can be posted."""

    code = "group_stuck"


class AttachmentError(ClientError):
    code = "attachment_error"


class AttachmentRefused(AttachmentError):
    """A downloaded attachment did not open or its digest is not its pointer's: it was
    deleted, never shown."""

    code = "attachment_refused"


class FileChanged(AttachmentError):
    """The file changed while it was being sent: its upload cannot go on."""

    code = "file_changed"


class AttachmentTooLarge(AttachmentError):
    code = "attachment_too_large"


__all__ = [
    "AlreadyInitialised",
    "AttachmentError",
    "AttachmentRefused",
    "AttachmentTooLarge",
    "CertificateMismatch",
    "CertificateUntrusted",
    "ClientError",
    "CorruptStore",
    "FileChanged",
    "GroupBusy",
    "GroupStuck",
    "IdentityChanged",
    "LinkCodeMismatch",
    "LinkFailed",
    "NotGroupAdmin",
    "NotGroupMember",
    "NotInitialised",
    "PassphraseRequired",
    "ServerRejected",
    "ServerUnreachable",
    "StoreError",
    "StoreRolledBack",
    "TrustRootMismatch",
    "UnapprovedDevice",
    "UnknownGroup",
    "UnknownUser",
    "WrongPassphrase",
]
