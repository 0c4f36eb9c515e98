"""The blob store interface: opaque attachment ciphertexts, uploaded resumably and read
by byte ranges.

The HTTP layer speaks tus 1.0 (core, creation, expiration and termination extensions,
https://tus.io/protocols/resumable-upload) for uploads and HTTP range requests (RFC 9110
§14) for downloads; this interface is what those protocols need and nothing of HTTP:

- :meth:`BlobStore.create` is tus creation: an unfinished upload of a declared length,
  charged at once to the uploading account's quota, with the hash of the download token
  the uploader chose (the token itself travels inside the encryption, to the recipients);
- :meth:`BlobStore.status` and :meth:`BlobStore.append` are tus core's HEAD and PATCH:
  bytes are appended only at the upload's offset, and what arrived before an interrupted
  body is kept, so the client resumes there;
- :meth:`BlobStore.terminate` is tus termination;
- :meth:`BlobStore.open_blob` opens a *complete* blob for a download, given its id and
  its token: an unfinished upload is never visible as a blob.

Uploads belong to an account (it pays the quota and alone may resume or terminate them);
nothing ties a blob to a conversation, and downloads need no account at all.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from veil.server.config import ServerConfig


@dataclass(frozen=True, slots=True)
class BlobLimits:
    """The bounds of one store (ServerConfig's blob block)."""

    max_blob_bytes: int
    quota_bytes: int
    max_blobs_per_account: int
    blob_ttl_ms: int
    upload_ttl_ms: int

    @classmethod
    def from_config(cls, config: ServerConfig) -> BlobLimits:
        return cls(max_blob_bytes=config.max_blob_bytes, quota_bytes=config.blob_quota_bytes,
                   max_blobs_per_account=config.max_blobs_per_account,
                   blob_ttl_ms=config.blob_ttl_s * 1000,
                   upload_ttl_ms=config.blob_upload_ttl_s * 1000)


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """Where an upload stands (tus HEAD): ``offset`` of ``length`` bytes received;
    ``expires_ms`` is when it (or, once complete, the blob) is deleted."""

    blob_id: str
    offset: int
    length: int
    expires_ms: int

    @property
    def complete(self) -> bool:
        return self.offset == self.length


@dataclass(frozen=True, slots=True)
class Usage:
    """What an account holds: bytes (unfinished uploads at their declared length) and
    the number of blobs and uploads."""

    used_bytes: int
    blobs: int


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    blobs: int  # complete blobs deleted
    uploads: int  # unfinished uploads deleted
    bytes: int  # their declared lengths


class BodySource(Protocol):
    """An upload body, read in bounded chunks.

    ``read`` returns the next chunk, ``b""`` at the end of the body, and raises
    :class:`veil.server.errors.UploadInterrupted` when the body cannot be finished (the
    connection went away, the client went silent, :meth:`interrupt` was called).
    ``interrupt`` ends a pending or later ``read`` that way: a newer request for the same
    upload takes it over from a connection that may be dead without anyone knowing yet.
    """

    async def read(self) -> bytes: ...

    def interrupt(self) -> None: ...


class BlobReader(abc.ABC):
    """An open complete blob (it stays readable if it expires meanwhile)."""

    size: int
    expires_ms: int

    @abc.abstractmethod
    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive), in bounded chunks."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class BlobStore(abc.ABC):
    """Opaque blobs behind tus uploads and ranged downloads (module docstring).

    Errors are those of :mod:`veil.server.errors`: ``BlobNotFound`` (also for another
    account's upload, which is not told apart), ``BlobTooLarge``,
    ``BlobQuotaExceeded``, ``UploadOffsetMismatch``, ``UploadExceedsLength``,
    ``UploadInterrupted``, ``InvalidBlobToken``. None of them changes another blob.
    """

    limits: BlobLimits

    @abc.abstractmethod
    async def open(self) -> None:
        """Recover after a stop or a crash: drop what was never acknowledged, delete what
        expired, rebuild the quota accounting."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create(self, account: bytes, length: int, token: bytes) -> UploadStatus:
        """A new upload of ``length`` bytes whose download token is ``token`` (only its
        hash is kept). A zero-length upload is complete at once."""

    @abc.abstractmethod
    async def status(self, account: bytes, blob_id: str) -> UploadStatus:
        """The offset of an upload of ``account`` (complete ones too)."""

    @abc.abstractmethod
    async def append(self, account: bytes, blob_id: str, offset: int,
                     body: BodySource, declared: int | None) -> UploadStatus:
        """Append ``body`` at ``offset``, which must be the upload's; ``declared`` is the
        body's length when the client stated it. The last byte completes the blob:
        written durably, then visible at once and whole. An interrupted body keeps what
        arrived (``UploadInterrupted`` is raised after it is saved); a body that goes
        beyond the upload's length keeps nothing of itself."""

    @abc.abstractmethod
    async def terminate(self, account: bytes, blob_id: str) -> None:
        """Delete an upload of ``account``, finished or not (tus termination)."""

    @abc.abstractmethod
    async def open_blob(self, blob_id: str, token: bytes) -> BlobReader:
        """A complete blob, if ``token`` is its download token."""

    @abc.abstractmethod
    async def expire(self) -> ExpiryReport:
        """Delete every blob and upload past its expiry (the files, not only entries)."""

    @abc.abstractmethod
    def usage(self, account: bytes) -> Usage: ...


__all__ = [
    "BlobLimits",
    "BlobReader",
    "BlobStore",
    "BodySource",
    "ExpiryReport",
    "UploadStatus",
    "Usage",
]
