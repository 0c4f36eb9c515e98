"""Attachment uploads: the tus 1.0 resumable upload protocol (https://tus.io/protocols/
resumable-upload, version 1.0.0): the core protocol and the creation, expiration and
termination extensions. docs/attachments.md describes the exchange.

- ``OPTIONS /v1/uploads``: ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``.
- ``POST /v1/uploads`` (creation): ``Upload-Length`` (``Upload-Defer-Length`` is not
  offered), the blob's download token in ``Veil-Blob-Token``; ``Upload-Metadata`` must be
  absent or empty (the server takes no names or media types: ``upload_metadata_refused``);
  201 with ``Location`` and ``Upload-Expires``.
- ``HEAD /v1/uploads/{blob_id}``: ``Upload-Offset``, ``Upload-Length``, ``Upload-Expires``.
- ``PATCH /v1/uploads/{blob_id}``: ``Content-Type: application/offset+octet-stream`` (else
  415), ``Upload-Offset`` equal to the upload's (else 409); the body is streamed to disk in
  bounded chunks, and what arrives before a connection drops is kept; 204 with the new
  ``Upload-Offset``.
- ``DELETE /v1/uploads/{blob_id}`` (termination): 204.

Every request but ``OPTIONS`` carries ``Tus-Resumable: 1.0.0`` (else 412 with
``Tus-Version``), and every answer of these paths does (:func:`tus_headers`). The tus
headers are read here, by :func:`tus_request` and the parsers below, since the route
table declares JSON bodies only; authentication is the route table's (device
credentials). Errors are the server's JSON errors with their codes.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from veil.server.blobs.base import BlobStore, UploadStatus
from veil.server.blobs.record import ID_PATTERN
from veil.server.errors import (
    BadRequest,
    BlobNotFound,
    TusVersionUnsupported,
    UnsupportedMediaType,
    UploadInterrupted,
    UploadMetadataRefused,
)
from veil.server.http.context import BLOB_TOKEN_HEADER
from veil.server.http.endpoint import Auth, Call, HeaderParam, PathParam, Route, blob_token

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,expiration,termination"
UPLOADS_PATH = "/v1/uploads"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
_MAX_DIGITS = 19


def parse_blob_id(text: str) -> str:
    """A blob id in a path: 16 random bytes as 32 lower-case hex characters."""
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise BlobNotFound("a blob id is 32 lower-case hex characters")
    return text


BLOB_ID = {"blob_id": PathParam(parse_blob_id, ID_PATTERN, "blob id, 32 hex characters")}


def store(call: Call) -> BlobStore:
    if call.c.blobs is None:  # a context built without blob storage
        raise BlobNotFound("this server stores no blobs")
    return call.c.blobs


def http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def tus_request(request: web.Request) -> None:
    """tus core: a request names the version it speaks (412 otherwise)."""
    version = request.headers.get("Tus-Resumable")
    if version != TUS_VERSION:
        raise TusVersionUnsupported(
            f"this server speaks tus {TUS_VERSION}; send Tus-Resumable: {TUS_VERSION}")


def header_int(request: web.Request, name: str) -> int | None:
    """A non-negative integer header (tus 1.0: Upload-Length, Upload-Offset)."""
    text = request.headers.get(name)
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_DIGITS:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(text)


async def tus_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the tus headers every answer of the upload paths carries,
    errors of the route wrapper (credentials, path) included."""
    if request.path == UPLOADS_PATH or request.path.startswith(UPLOADS_PATH + "/"):
        response.headers["Tus-Resumable"] = TUS_VERSION
        if response.status == 412:
            response.headers["Tus-Version"] = TUS_VERSION
        response.headers.setdefault("Cache-Control", "no-store")


def _progress(status: UploadStatus, code: int) -> web.Response:
    return web.Response(status=code, headers={
        "Upload-Offset": str(status.offset),
        "Upload-Expires": http_date(status.expires_ms),
    })


class RequestBody:
    """A PATCH body as a :class:`veil.server.blobs.BodySource`: chunks as they arrive
    (aiohttp buffers at most its read limit), each awaited at most ``idle_s``."""

    def __init__(self, request: web.Request, idle_s: float) -> None:
        self._content = request.content
        self._idle_s = idle_s

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._idle_s):
                return await self._content.readany()
        except UploadInterrupted:
            raise
        except TimeoutError:
            raise UploadInterrupted(
                f"no bytes for {self._idle_s:g} s; what arrived is kept") from None
        except (ConnectionError, HttpProcessingError) as exc:
            raise UploadInterrupted(
                f"the connection ended before the body ({type(exc).__name__})") from None

    def interrupt(self) -> None:
        self._content.set_exception(UploadInterrupted(
            "a newer request for this upload took over; what arrived is kept"))


# ---- handlers ------------------------------------------------------------------------------
async def tus_options(call: Call) -> web.Response:
    return web.Response(status=204, headers={
        "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(call.c.config.max_blob_bytes)})


async def create_upload(call: Call) -> web.Response:
    request = call.request
    tus_request(request)
    if "Upload-Defer-Length" in request.headers:
        raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length")
    length = header_int(request, "Upload-Length")
    if length is None:
        raise BadRequest("a tus creation needs Upload-Length")
    if request.headers.get("Upload-Metadata", "").strip():
        raise UploadMetadataRefused(
            "Upload-Metadata is refused: file names and media types travel inside the "
            "encryption, never to the server")
    if request.content_length or request.headers.get("Transfer-Encoding"):
        raise BadRequest("creation with an upload body is not supported: PATCH the bytes")
    if BLOB_TOKEN_HEADER not in request.headers:
        raise BadRequest(f"a tus creation needs the blob's {BLOB_TOKEN_HEADER}")
    token = blob_token(request)
    status = await store(call).create(call.me.account_id, length, token)
    return web.Response(status=201, headers={
        "Location": f"{UPLOADS_PATH}/{status.blob_id}",
        "Upload-Expires": http_date(status.expires_ms),
        "Upload-Offset": str(status.offset),
    })


async def upload_status(call: Call) -> web.Response:
    tus_request(call.request)
    status = await store(call).status(call.me.account_id, call.path["blob_id"])
    return web.Response(status=200, headers={
        "Upload-Offset": str(status.offset), "Upload-Length": str(status.length),
        "Upload-Expires": http_date(status.expires_ms)})


async def upload_chunk(call: Call) -> web.Response:
    request = call.request
    tus_request(request)
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"a tus PATCH body is {OFFSET_CONTENT_TYPE}")
    offset = header_int(request, "Upload-Offset")
    if offset is None:
        raise BadRequest("a tus PATCH needs Upload-Offset")
    body = RequestBody(request, float(call.c.config.blob_idle_timeout_s))
    status = await store(call).append(call.me.account_id, call.path["blob_id"], offset,
                                      body, request.content_length)
    return _progress(status, 204)


async def terminate_upload(call: Call) -> web.Response:
    tus_request(call.request)
    await store(call).terminate(call.me.account_id, call.path["blob_id"])
    return web.Response(status=204)


_INTEGER = {"type": "string", "pattern": r"^[0-9]{1,19}$"}
_TUS = HeaderParam("Tus-Resumable", {"type": "string", "enum": [TUS_VERSION]}, required=True,
                   description="the tus version of the request (412 otherwise)")
_CREATE_HEADERS = (
    _TUS,
    HeaderParam("Upload-Length", _INTEGER, required=True,
                description="the upload's size in bytes (at most Tus-Max-Size)"),
    HeaderParam(BLOB_TOKEN_HEADER, {"type": "string", "pattern": r"^[A-Za-z0-9+/]{43}=$"},
                required=True, description="base64 of the 32-byte download token"),
)
_PATCH_HEADERS = (_TUS, HeaderParam("Upload-Offset", _INTEGER, required=True,
                                    description="the offset the body starts at"))
_TUS_412 = ("Tus-Resumable is not 1.0.0 (tus_version_unsupported)", None)
_NOT_FOUND = ("No upload of this account with that id: never made, expired or terminated "
              "(blob_not_found)", None)

ROUTES: tuple[Route, ...] = (
    Route("OPTIONS", UPLOADS_PATH, tus_options,
          "tus 1.0 discovery: Tus-Version, Tus-Extension, Tus-Max-Size",
          auth=Auth.NONE, query=(), body=None, rate_limit="public", audit="none",
          tag="blobs", responses={204: ("The tus capabilities, in headers", None)}),
    Route("POST", UPLOADS_PATH, create_upload,
          "tus 1.0 creation: Upload-Length and Veil-Blob-Token; no Upload-Metadata",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="blob_upload", audit="none",
          tag="blobs", headers=_CREATE_HEADERS, responses={
              201: ("Created: Location and Upload-Expires", None),
              412: _TUS_412,
              413: ("Upload-Length above Tus-Max-Size (blob_too_large), or the account's "
                    "quota is used (blob_quota_exceeded)", None)}),
    Route("HEAD", UPLOADS_PATH + "/{blob_id}", upload_status,
          "tus 1.0 offset: Upload-Offset, Upload-Length, Upload-Expires",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="blob_upload", audit="none",
          tag="blobs", path_params=BLOB_ID, headers=(_TUS,), responses={
              200: ("Upload-Offset, Upload-Length, Upload-Expires", None),
              404: _NOT_FOUND, 412: _TUS_412}),
    Route("PATCH", UPLOADS_PATH + "/{blob_id}", upload_chunk,
          "tus 1.0 append: application/offset+octet-stream at Upload-Offset",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="blob_upload", audit="none",
          tag="blobs", path_params=BLOB_ID, headers=_PATCH_HEADERS,
          raw_body=OFFSET_CONTENT_TYPE, responses={
              204: ("Stored: the new Upload-Offset", None),
              400: ("Missing header, or the body ended early (upload_interrupted; what "
                    "arrived is kept)", None),
              404: _NOT_FOUND,
              409: ("Upload-Offset is not the upload's (upload_offset_mismatch; details: "
                    "offset)", None),
              412: _TUS_412,
              413: ("Bytes beyond Upload-Length (upload_exceeds_length)", None),
              415: ("Content-Type is not application/offset+octet-stream "
                    "(unsupported_media_type)", None)}),
    Route("DELETE", UPLOADS_PATH + "/{blob_id}", terminate_upload,
          "tus 1.0 termination: delete the upload or blob",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="blob_upload", audit="none",
          tag="blobs", path_params=BLOB_ID, headers=(_TUS,), responses={
              204: ("Deleted", None), 404: _NOT_FOUND, 412: _TUS_412}),
)

__all__ = [
    "BLOB_ID",
    "ROUTES",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "UPLOADS_PATH",
    "RequestBody",
    "parse_blob_id",
    "tus_headers",
]
