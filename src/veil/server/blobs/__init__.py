"""Attachments' blob storage (issue 12 §1, §4): opaque ciphertexts uploaded with the tus
1.0 resumable upload protocol and downloaded with HTTP range requests (RFC 9110 §14).

:mod:`.base` is the interface, :mod:`.files` the data-directory implementation (with
:mod:`.disk` and :mod:`.record`, its files and their format). The HTTP side is
``veil.server.http.routes.uploads`` (tus) and ``veil.server.http.routes.blobs``
(downloads); docs/attachments.md describes all of it.
"""

from __future__ import annotations

from veil.server.blobs.base import (
    BlobLimits,
    BlobReader,
    BlobStore,
    BodySource,
    ExpiryReport,
    UploadStatus,
    Usage,
)
from veil.server.blobs.files import FileBlobStore, run_blob_expiry

BLOBS_DIR = "blobs"  # under the data directory

__all__ = [
    "BLOBS_DIR",
    "BlobLimits",
    "BlobReader",
    "BlobStore",
    "BodySource",
    "ExpiryReport",
    "FileBlobStore",
    "UploadStatus",
    "Usage",
    "run_blob_expiry",
]
