"""Message queue routes: submit (device or sealed), relayed submissions, fetch, acknowledge."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from veil.core.errors import CoreError
from veil.core.submission import Submission
from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.server.encoding import parse_account_id
from veil.server.errors import BadRequest, MessageNotFound, PayloadTooLarge, ValidationFailed
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, IntQuery, PathParam, Route
from veil.server.http.routes.keys import ACCOUNT_ID_PATTERN
from veil.server.services.messages import (
    Accepted,
    DeviceSender,
    Outgoing,
    SealedSender,
    Sender,
)

MAX_AFTER = (1 << 53) - 1  # JSON-safe integers


def _accepted(accepted: Sequence[Accepted]) -> web.Response:
    return json_response(rs.Accepted(messages=[
        rs.StoredEnvelope(device_id=a.device_id, id=a.id, ts=a.ts) for a in accepted
    ]))


def _message_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise BadRequest("message id must be a positive integer")
    return int(text)


async def submit(call: Call) -> web.Response:
    device = call.device
    sender: Sender = (
        SealedSender(call.access_key) if device is None
        else DeviceSender(device.account_id, device.device_id)
    )
    body: rq.Submission = call.body
    items = [Outgoing(m.device_id, m.envelope) for m in body.messages]
    return _accepted(await call.c.messages.submit(call.path["target"], items, sender))


async def relayed_submission(call: Call) -> web.Response:
    """A sealed submission that reached us through the mixnet's provider: the same rules
    as ``PUT /v1/messages/{account}`` with an access key, and the connection it came on
    is the provider's, never the sender's."""
    config = call.c.config
    try:
        submission = Submission.decode(call.body.submission)
    except CoreError as exc:
        raise ValidationFailed(f"submission: {exc}") from None
    items = []
    for device_id, envelope in submission.envelopes:
        if not envelope:  # as over HTTP and WebSocket: an envelope has at least one byte
            raise ValidationFailed("submission: an envelope is empty")
        if len(envelope) > config.max_envelope_bytes:
            raise PayloadTooLarge(f"an envelope is larger than {config.max_envelope_bytes} "
                                  "bytes")
        items.append(Outgoing(device_id, envelope))
    return _accepted(await call.c.messages.submit(
        submission.recipient, items, SealedSender(submission.access_key)
    ))


async def fetch_messages(call: Call) -> web.Response:
    device, config = call.me, call.c.config
    limit = call.query["limit"]
    rows = await call.c.messages.pending(
        device.account_id, device.device_id, limit + 1, call.query["after"]
    )
    # Cut by bytes too: a page of large envelopes would otherwise build a response of
    # limit × max_envelope_bytes (base64 and JSON on top). The first always fits.
    page, total = 0, 0
    for e in rows[:limit]:
        total += len(e.body)
        if page and total > config.fetch_max_bytes:
            break
        page += 1
    return json_response(rs.MessagePage(
        messages=[rs.QueuedEnvelope(id=e.id, ts=e.ts, envelope=e.body) for e in rows[:page]],
        more=len(rows) > page,
    ))


async def delete_message(call: Call) -> web.Response:
    device = call.me
    deleted = await call.c.messages.acknowledge(
        device.account_id, device.device_id, [call.path["target"]]
    )
    if deleted == 0:
        raise MessageNotFound("no queued envelope with that id")
    return web.Response(status=204)


# Retry later: the recipient's device queue is full (queue_full), or its account's queued
# bytes would exceed max_queued_bytes_per_account (queue_quota_exceeded; issue 12 §4).
_FULL = ("The recipient's queue is full (queue_full) or over its byte quota "
         "(queue_quota_exceeded; details: quota_bytes); nothing was stored", None)

ROUTES: tuple[Route, ...] = (
    # One template for both routes of /v1/messages/{target} (an account for PUT, an
    # envelope id for DELETE): aiohttp routes them by the same pattern, and OpenAPI
    # forbids two templates that differ only in the parameter name.
    Route("PUT", "/v1/messages/{target}", submit,
          "Submit one envelope per recipient device (sealed: Veil-Access-Key)",
          auth=Auth.DEVICE_OR_ACCESS_KEY, query=(), body=rq.Submission, rate_limit="submit",
          audit="none", responses={
              200: ("Stored durably", rs.Accepted),
              409: ("The devices named are not the account's (mismatched_devices; details: "
                    "missing_devices, extra_devices)", None),
              429: _FULL},
          tag="messages",
          path_params={"target": PathParam(parse_account_id, ACCOUNT_ID_PATTERN,
                                               "recipient account id, hex")}),
    Route("POST", "/v1/mixnet/submissions", relayed_submission,
          "Deliver a sealed submission relayed by a mixnet provider (access key inside)",
          auth=Auth.NONE, query=(), body=rq.RelayedSubmission, rate_limit="relay",
          audit="none", responses={
              200: ("Stored durably", rs.Accepted),
              409: ("The devices named are not the account's (mismatched_devices)", None),
              429: _FULL},
          tag="messages"),
    Route("GET", "/v1/messages", fetch_messages,
          "Queued envelopes of this device, oldest first (?limit, ?after)",
          auth=Auth.DEVICE,
          query=(IntQuery("limit", default="fetch_limit", low=1, high="fetch_limit"),
                 IntQuery("after", default=0, low=0, high=MAX_AFTER)),
          body=None, rate_limit="fetch", audit="none", tag="messages",
          responses={200: ("A page of envelopes", rs.MessagePage)}),
    Route("DELETE", "/v1/messages/{target}", delete_message,
          "Acknowledge (delete) one queued envelope",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="ack", audit="none",
          responses={204: ("Deleted", None)}, tag="messages",
          path_params={"target": PathParam(_message_id, "^[0-9]{1,16}$", "envelope id")}),
)

__all__ = [
    "ROUTES",
]
