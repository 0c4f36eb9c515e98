"""The error tree of ``veil.server``.

Every failure a client can cause is a :class:`ServerError` subclass with a stable
``code`` (the machine-readable ``error.code`` of the JSON error body) and an HTTP
``status``. Handlers never build error responses by hand: they raise, and the HTTP
layer renders ``{"error": {"code": ..., "message": ..., "details"?: {...}}}``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from veil.core.errors import VeilError


class ServerError(VeilError):
    """Root of the server's errors. Unexpected bugs are *not* ServerErrors: they are 500s."""

    code = "server_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(ServerError):
    """The configuration file or a command-line setting is invalid."""

    code = "config_error"
    status = 500


class StorageError(ServerError):
    """The storage backend failed (disk full, corrupt database, unreachable server)."""

    code = "storage_error"
    status = 503


class DatabaseTooNew(StorageError):
    """The database was written by newer code that this code cannot safely use.

    Raised at start, before anything is written to the database.
    """

    code = "database_too_new"

    def __init__(self, message: str, schema_version: int, compat_version: int) -> None:
        super().__init__(message)
        self.schema_version = schema_version
        self.compat_version = compat_version


class BadRequest(ServerError):
    """The request cannot be understood (not JSON, bad path parameter)."""

    code = "bad_request"
    status = 400


class InvalidJson(BadRequest):
    """The body is not a JSON document."""

    code = "invalid_json"


class ValidationFailed(ServerError):
    """The JSON is well-formed but does not match the schema (unknown field, wrong type)."""

    code = "validation_failed"
    status = 422


class PayloadTooLarge(ServerError):
    """A body, frame, envelope or batch exceeds its configured limit."""

    code = "payload_too_large"
    status = 413


class Unauthorized(ServerError):
    """Missing or wrong device credentials."""

    code = "unauthorized"
    status = 401


class InvalidAccessKey(Unauthorized):
    """A sealed submission without a matching recipient access key."""

    code = "invalid_access_key"


class Forbidden(ServerError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"
    status = 403


class RegistrationClosed(Forbidden):
    """This deployment registers accounts only with an invite token."""

    code = "registration_closed"


class InvalidInvite(Forbidden):
    """The invite token is unknown, used or expired."""

    code = "invalid_invite"


class NotFound(ServerError):
    """No such route or resource."""

    code = "not_found"
    status = 404


class AccountNotFound(NotFound):
    """No account with that id."""

    code = "account_not_found"


class DeviceNotFound(NotFound):
    """The account has no device with that id."""

    code = "device_not_found"


class UsernameNotFound(NotFound):
    """No account holds that username."""

    code = "username_not_found"


class MessageNotFound(NotFound):
    """No queued envelope with that id for this device."""

    code = "message_not_found"


class MethodNotAllowed(ServerError):
    """The route exists but not for this HTTP method."""

    code = "method_not_allowed"
    status = 405


class Conflict(ServerError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class UsernameTaken(Conflict):
    """Another account already holds this username."""

    code = "username_taken"


class DuplicatePreKey(Conflict):
    """A one-time prekey id is already stored (or repeated in the upload)."""

    code = "duplicate_prekey"


class MismatchedDevices(Conflict):
    """A submission does not cover exactly the recipient's current devices."""

    code = "mismatched_devices"


class LastDevice(Conflict):
    """The account's only device cannot be removed on its own: delete the account."""

    code = "last_device"


class LimitExceeded(ServerError):
    """A stock or count limit would be exceeded (stored prekeys, devices)."""

    code = "limit_exceeded"
    status = 422


class QueueFull(ServerError):
    """A recipient device's queue holds the maximum number of envelopes."""

    code = "queue_full"
    status = 429


class QueueQuotaExceeded(QueueFull):
    """The recipient account's queued envelopes would exceed max_queued_bytes_per_account
    (``details``: ``quota_bytes``). 429 like ``queue_full``: the sender did nothing wrong
    and the space comes back as the recipient fetches or envelopes expire, so the
    client keeps the message in its outbox and retries (413 would make it drop it)."""

    code = "queue_quota_exceeded"


class EpochConflict(Conflict):
    """A group commit or message names an epoch that is not the group's current one:
    another commit won (``details``: ``current_epoch``); fetch, process, retry."""

    code = "epoch_conflict"


class GroupExists(Conflict):
    """A group with that id exists already (ids are random: pick another)."""

    code = "group_exists"


class GroupNotFound(NotFound):
    """No group with that id (or it expired)."""

    code = "group_not_found"


class InvalidCapability(Unauthorized):
    """A group read or write capability that is missing, malformed or does not match."""

    code = "invalid_capability"


class DuplicateKeyPackage(Conflict):
    """A KeyPackage is already stored (or repeated in the upload)."""

    code = "duplicate_key_package"


class GroupQuotaExceeded(ServerError):
    """The group's mailbox holds its maximum bytes or messages (old ones expire)."""

    code = "group_quota_exceeded"
    status = 429


class TooManySubscriptions(ServerError):
    """A socket holds its maximum number of group subscriptions."""

    code = "too_many_subscriptions"
    status = 429


# --- linked devices (docs/devices.md) ---------------------------------------------------
class DeviceIdTaken(Conflict):
    """The account already has (or had, in this link attempt) a device with that id."""

    code = "device_id_taken"


class InvalidApproval(Forbidden):
    """A device approval that does not verify under the account's identity, names
    another device, or is not recent."""

    code = "invalid_approval"


class ChannelNotFound(NotFound):
    """No provisioning channel with that id (never opened, expired or already read)."""

    code = "provisioning_channel_not_found"


class ChannelUsed(Conflict):
    """The provisioning channel holds its one message already."""

    code = "provisioning_message_exists"
# --- end of linked devices -------------------------------------------------------------


# --- attachments' blobs (docs/attachments.md) ------------------------------------------
class BlobNotFound(NotFound):
    """No complete blob (downloads) or unfinished upload of this account (tus requests)
    with that id: never created, expired, terminated, or not finished yet."""

    code = "blob_not_found"


class InvalidBlobToken(Forbidden):
    """A blob download without the blob's download token, or with another one."""

    code = "invalid_blob_token"


class BlobTooLarge(PayloadTooLarge):
    """An upload's declared length is above max_blob_bytes (Tus-Max-Size)."""

    code = "blob_too_large"


class BlobQuotaExceeded(PayloadTooLarge):
    """The account's blobs and unfinished uploads would exceed blob_quota_bytes or
    max_blobs_per_account (``details``: ``used_bytes``, ``quota_bytes``, ``blobs``)."""

    code = "blob_quota_exceeded"


class UploadExceedsLength(PayloadTooLarge):
    """A PATCH carries bytes beyond the upload's declared Upload-Length (nothing of it is
    kept)."""

    code = "upload_exceeds_length"


class UploadOffsetMismatch(Conflict):
    """A PATCH's Upload-Offset is not the upload's offset (``details``: ``offset``):
    ask with HEAD and resume from there."""

    code = "upload_offset_mismatch"


class UploadInterrupted(ServerError):
    """A PATCH ended before its body did (connection lost, silent for
    blob_idle_timeout_s, or superseded by a newer request for the same upload); what
    arrived is kept: resume at the offset HEAD gives."""

    code = "upload_interrupted"
    status = 400


class TusVersionUnsupported(ServerError):
    """A tus request without ``Tus-Resumable: 1.0.0`` (tus 1.0 core, 412)."""

    code = "tus_version_unsupported"
    status = 412


class UnsupportedMediaType(ServerError):
    """A PATCH whose Content-Type is not application/offset+octet-stream (415)."""

    code = "unsupported_media_type"
    status = 415


class UploadMetadataRefused(BadRequest):
    """A tus creation with a non-empty Upload-Metadata: the server never takes names or
    media types of attachments (they travel inside the encryption)."""

    code = "upload_metadata_refused"


class RangeNotSatisfiable(ServerError):
    """A download's Range is malformed or starts beyond the blob (RFC 9110 §15.5.17)."""

    code = "range_not_satisfiable"
    status = 416
# --- end of attachments' blobs ---------------------------------------------------------


# --- protection layers (issue 13 §2) --------------------------------------------------
def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


class RateLimited(ServerError):
    """A token bucket of the application layer is empty: retry after ``retry_after``
    seconds (also the ``Retry-After`` header; a WebSocket gets an error frame)."""

    code = "rate_limited"
    status = 429
    retry_after: int = 1

    @classmethod
    def after(cls, seconds: float, limit_class: str) -> RateLimited:
        wait = _whole_seconds(seconds)
        exc = cls(f"too many requests; retry after {wait} s",
                  {"retry_after": wait, "limit": limit_class})
        exc.retry_after = wait
        return exc


class Blocked(Forbidden):
    """The client's address is blocked for a while by the detection layer."""

    code = "blocked"
    retry_after: int = 1

    @classmethod
    def after(cls, seconds: float) -> Blocked:
        wait = _whole_seconds(seconds)
        exc = cls(f"this address is blocked; retry after {wait} s", {"retry_after": wait})
        exc.retry_after = wait
        return exc


class ProofOfWorkRequired(Forbidden):
    """Registration on this server needs a solved challenge (GET /v1/accounts/challenge)."""

    code = "proof_of_work_required"


class InvalidProofOfWork(Forbidden):
    """The registration's proof of work is wrong, expired, or used already."""

    code = "invalid_proof_of_work"


class TooManyConnections(ServerError):
    """The server holds its maximum number of WebSocket connections."""

    code = "too_many_connections"
    status = 503


class RequestTimeout(ServerError):
    """The request's body did not arrive within ``network.body_timeout_s``."""

    code = "request_timeout"
    status = 408


class DataDirectoryInUse(ServerError):
    """Another server process holds the data directory's lock (issue 10 §5, item 1)."""

    code = "data_directory_in_use"

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class NotAServerDirectory(ConfigError):
    """A command that needs an existing server found no database in the data directory."""

    code = "not_a_server_directory"


class BackupError(ServerError):
    """A backup or a restore cannot be made (missing files, existing output)."""

    code = "backup_error"


class InvalidBackup(BackupError):
    """The file is not a Veil server backup, is damaged, or is of an unknown format."""

    code = "invalid_backup"


class RestoreTargetNotEmpty(BackupError):
    """A backup is restored only into a new or empty data directory."""

    code = "restore_target_not_empty"


# --- the admin listener (issue 13 §4; server/admin/) -------------------------------------


class InvalidAdminToken(Unauthorized):
    """The admin API was called without the admin token (DATA/admin/token) or with
    another, or the dashboard session has ended."""

    code = "invalid_admin_token"


class CsrfRefused(Forbidden):
    """A dashboard request that changes something came without its session's CSRF
    header, or from another origin."""

    code = "csrf_refused"


class AdminBlockNotFound(NotFound):
    """No block in force has that id (it expired, or was lifted already)."""

    code = "block_not_found"


class NotAvailable(ServerError):
    """The protection layer an admin operation needs is not part of this server."""

    code = "not_available"
    status = 503
# --- end of the admin listener ----------------------------------------------------------


__all__ = [
    "AccountNotFound",
    "AdminBlockNotFound",
    "BackupError",
    "BadRequest",
    "BlobNotFound",
    "BlobQuotaExceeded",
    "BlobTooLarge",
    "Blocked",
    "ChannelNotFound",
    "ChannelUsed",
    "ConfigError",
    "CsrfRefused",
    "DataDirectoryInUse",
    "DatabaseTooNew",
    "DeviceIdTaken",
    "DeviceNotFound",
    "DuplicateKeyPackage",
    "DuplicatePreKey",
    "EpochConflict",
    "GroupExists",
    "GroupNotFound",
    "GroupQuotaExceeded",
    "InvalidAccessKey",
    "InvalidAdminToken",
    "InvalidApproval",
    "InvalidBackup",
    "InvalidBlobToken",
    "InvalidCapability",
    "InvalidInvite",
    "InvalidJson",
    "InvalidProofOfWork",
    "LastDevice",
    "LimitExceeded",
    "MessageNotFound",
    "MethodNotAllowed",
    "MismatchedDevices",
    "NotAServerDirectory",
    "NotAvailable",
    "NotFound",
    "PayloadTooLarge",
    "ProofOfWorkRequired",
    "QueueFull",
    "QueueQuotaExceeded",
    "RangeNotSatisfiable",
    "RateLimited",
    "RegistrationClosed",
    "RequestTimeout",
    "RestoreTargetNotEmpty",
    "ServerError",
    "StorageError",
    "TooManyConnections",
    "TooManySubscriptions",
    "TusVersionUnsupported",
    "Unauthorized",
    "UnsupportedMediaType",
    "UploadExceedsLength",
    "UploadInterrupted",
    "UploadMetadataRefused",
    "UploadOffsetMismatch",
    "UsernameNotFound",
    "UsernameTaken",
    "ValidationFailed",
]
