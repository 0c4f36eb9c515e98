"""Attachment downloads: ``GET``/``HEAD /v1/blobs/{blob_id}`` with the blob's download
token in ``Veil-Blob-Token`` and no account credentials (those are not read here: the
server cannot tell who downloads). Range requests per RFC 9110 §14
(:func:`parse_range`, below): 206 with ``Content-Range`` for one byte range, 416
with ``Content-Range: bytes */SIZE`` for a malformed or unsatisfiable one, 200 for the
whole blob. Bytes are streamed from the file in bounded chunks.

Blobs never change, so the entity tag is fixed (``"<blob_id>"``) and an ``If-Range``
naming it keeps the range. Answers say ``Cache-Control: no-store``: no shared cache is
to keep a copy of a recipient's download.

One ``bytes`` range is served as 206 Partial Content with ``Content-Range``
(§14.4, §15.3.7): ``first-last``, ``first-`` and the suffix form ``-length``; a last
position beyond the blob is clipped to its end (§14.1.2). What is not served as a range:

- no ``Range``, a range unit other than ``bytes`` (§14.2: ignored), or an ``If-Range``
  that does not name this blob's entity tag (§13.1.5): the whole blob, 200;
- several ranges: the whole blob, 200 (§14.2 lets a server ignore ``Range``; multipart
  answers would only cost memory and code for what no Veil client asks);
- a malformed ``bytes`` range (``5-2``, ``x-``) or one that starts at or beyond the end
  of the blob, and every range of an empty blob: 416 Range Not Satisfiable with
  ``Content-Range: bytes */SIZE`` (§15.5.17).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from veil.protocol.responses import ErrorResponse
from veil.server.errors import RangeNotSatisfiable
from veil.server.http.context import error_detail, json_response
from veil.server.http.endpoint import Auth, Call, Route
from veil.server.http.routes.uploads import BLOB_ID, store

# ---- ranges (RFC 9110 §14) --------------------------------------------------------------
_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
_MAX_DIGITS = 19  # beyond any file size; bounds the integers parsed from the header


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def unsatisfiable(size: int) -> str:
    """The ``Content-Range`` of a 416 answer."""
    return f"bytes */{size}"


def parse_range(header: str | None, size: int, if_range: str | None = None,
                 etag: str = "") -> ByteRange | None:
    """The one range to serve of a blob of ``size`` bytes, or None for the whole blob.
    Raises :class:`RangeNotSatisfiable` (module docstring)."""
    if header is None:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > 1:
        if not all(_SPEC.fullmatch(p) for p in parts):
            raise RangeNotSatisfiable("the Range header is malformed")
        return None
    match = _SPEC.fullmatch(parts[0])
    if match is None:
        raise RangeNotSatisfiable("the Range header is malformed")
    first, last = match.group(1), match.group(2)
    if (not first and not last) or len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        raise RangeNotSatisfiable("the Range header is malformed")
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the blob has {size} bytes; no such range")
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    end = size if not last else int(last) + 1
    if last and int(last) < start:
        raise RangeNotSatisfiable("the Range's last byte is before its first")
    if start >= size:
        raise RangeNotSatisfiable(f"the blob has {size} bytes; the range starts beyond")
    return ByteRange(start, min(end, size))


# ---- handlers --------------------------------------------------------------------------
def _headers(blob_id: str) -> dict[str, str]:
    return {"Accept-Ranges": "bytes", "ETag": f'"{blob_id}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"}


async def _serve(call: Call, with_body: bool) -> web.StreamResponse:
    request = call.request
    blob_id: str = call.path["blob_id"]
    reader = await store(call).open_blob(blob_id, call.capability)
    try:
        try:
            wanted = parse_range(request.headers.get("Range"), reader.size,
                                 request.headers.get("If-Range"), f'"{blob_id}"')
        except RangeNotSatisfiable as exc:
            refusal = json_response(ErrorResponse(error=error_detail(exc)), status=416)
            refusal.headers.update(_headers(blob_id))
            refusal.headers["Content-Range"] = unsatisfiable(reader.size)
            return refusal
        part = wanted or ByteRange(0, reader.size)
        response = web.StreamResponse(status=200 if wanted is None else 206,
                                      headers=_headers(blob_id))
        response.content_type = "application/octet-stream"
        response.content_length = part.length
        if wanted is not None:
            response.headers["Content-Range"] = wanted.content_range(reader.size)
        await response.prepare(request)
        if with_body:
            async for chunk in reader.chunks(part.start, part.end):
                await response.write(chunk)  # waits while the client's buffer is full
        await response.write_eof()
        return response
    finally:
        await reader.close()


async def download_blob(call: Call) -> web.StreamResponse:
    return await _serve(call, with_body=True)


async def blob_head(call: Call) -> web.StreamResponse:
    return await _serve(call, with_body=False)


_ANSWERS = {
    200: ("The whole blob (application/octet-stream)", None),
    206: ("One byte range, with Content-Range", None),
    403: ("Missing or wrong Veil-Blob-Token (invalid_blob_token)", None),
    404: ("No complete blob with that id: never made, unfinished, expired or deleted "
          "(blob_not_found)", None),
    416: ("A malformed Range, or one beyond the blob (range_not_satisfiable; "
          "Content-Range: bytes */SIZE)", None),
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/blobs/{blob_id}", download_blob,
          "Download a blob, whole or one Range (Veil-Blob-Token; no account)",
          auth=Auth.BLOB_TOKEN, query=(), body=None, rate_limit="blob_download",
          audit="none", tag="blobs", path_params=BLOB_ID, responses=_ANSWERS),
    Route("HEAD", "/v1/blobs/{blob_id}", blob_head,
          "A blob's size (Content-Length) without its bytes (Veil-Blob-Token)",
          auth=Auth.BLOB_TOKEN, query=(), body=None, rate_limit="blob_download",
          audit="none", tag="blobs", path_params=BLOB_ID, responses=_ANSWERS),
)

__all__ = ["ROUTES", "ByteRange", "parse_range", "unsatisfiable"]
