"""Group mailbox routes (the MLS Delivery Service): create, read the state, commit,
post, fetch. Every route but create proves itself with a group capability header."""

from __future__ import annotations

from aiohttp import web

from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.server.errors import BadRequest, ValidationFailed
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, IntQuery, PathParam, Route
from veil.server.storage.base import GroupMessage, NextEpoch

MAX_SEQ = (1 << 53) - 1
GROUP_ID_PATTERN = r"^(?:[0-9a-f]{2}){16,32}$"


def parse_group_id(text: str) -> bytes:
    """A group id in a path: 16 to 32 bytes as lower-case hex."""
    if not 32 <= len(text) <= 64 or len(text) % 2:
        raise BadRequest("group id must be 16 to 32 bytes in lower-case hex")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise BadRequest("group id must be 16 to 32 bytes in lower-case hex") from None
    if value.hex() != text:
        raise BadRequest("group id must be 16 to 32 bytes in lower-case hex")
    return value


_GROUP = {"group_id": PathParam(parse_group_id, GROUP_ID_PATTERN, "group id, hex")}


def _appended(stored: GroupMessage) -> web.Response:
    return json_response(rs.GroupAppended(
        seq=stored.seq, ts=stored.ts, epoch=stored.epoch + int(stored.commit)))


async def create_group(call: Call) -> web.Response:
    body: rq.GroupCreate = call.body
    if body.read_verifier == body.write_verifier:
        raise ValidationFailed("read_verifier and write_verifier must differ")
    await call.c.groups.create(body.group_id, body.read_verifier, body.write_verifier)
    return json_response(rs.GroupMailbox(group_id=body.group_id, epoch=0, last_seq=0),
                         status=201)


async def group_state(call: Call) -> web.Response:
    group_id: bytes = call.path["group_id"]
    view = await call.c.groups.check_read(group_id, call.query["epoch"], call.capability)
    return json_response(rs.GroupMailbox(group_id=group_id, epoch=view.epoch,
                                         last_seq=view.last_seq))


async def post_commit(call: Call) -> web.Response:
    body: rq.GroupCommit = call.body
    if body.next_read_verifier == body.next_write_verifier:
        raise ValidationFailed("next_read_verifier and next_write_verifier must differ")
    return _appended(await call.c.groups.post(
        call.path["group_id"], body.epoch, call.capability, body.message,
        NextEpoch(body.next_read_verifier, body.next_write_verifier)))


async def post_message(call: Call) -> web.Response:
    body: rq.GroupPost = call.body
    return _appended(await call.c.groups.post(
        call.path["group_id"], body.epoch, call.capability, body.message))


async def fetch_group_messages(call: Call) -> web.Response:
    page = await call.c.groups.fetch(
        call.path["group_id"], call.query["epoch"], call.capability, call.query["after"],
        call.query["limit"])
    return json_response(rs.GroupMessagePage(
        messages=[rs.GroupStoredMessage(seq=m.seq, epoch=m.epoch, ts=m.ts, commit=m.commit,
                                        message=m.body) for m in page.messages],
        more=page.more, epoch_ended=page.epoch_ended, current_epoch=page.current_epoch))


_EPOCH = IntQuery("epoch", default=0, low=0, high=MAX_SEQ)
_CONFLICT = ("Another commit ended that epoch, or the group is at another one "
             "(epoch_conflict; details: current_epoch)", None)

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/groups", create_group,
          "Create a group mailbox at epoch 0 (anonymous: no credentials)",
          auth=Auth.NONE, query=(), body=rq.GroupCreate, rate_limit="group_create",
          audit="none", tag="groups",
          responses={201: ("Created", rs.GroupMailbox),
                     409: ("A group with that id exists (group_exists)", None),
                     422: ("The two verifiers are equal (validation_failed), or the "
                           "server holds max_groups groups (limit_exceeded)", None)}),
    Route("GET", "/v1/groups/{group_id}", group_state,
          "The group's current epoch and last seq (read capability of ?epoch)",
          auth=Auth.GROUP_READ, query=(_EPOCH,), body=None, rate_limit="group_read",
          audit="none", tag="groups", path_params=_GROUP,
          responses={200: ("The state", rs.GroupMailbox)}),
    Route("POST", "/v1/groups/{group_id}/commits", post_commit,
          "The commit that ends the current epoch, with the next epoch's verifiers",
          auth=Auth.GROUP_WRITE, query=(), body=rq.GroupCommit, rate_limit="group_write",
          audit="none", tag="groups", path_params=_GROUP,
          responses={200: ("Stored; the group is at the next epoch", rs.GroupAppended),
                     409: _CONFLICT,
                     429: ("The group's quota is used (group_quota_exceeded)", None)}),
    Route("POST", "/v1/groups/{group_id}/messages", post_message,
          "Post an MLS message of the current epoch (stored once for every member)",
          auth=Auth.GROUP_WRITE, query=(), body=rq.GroupPost, rate_limit="group_write",
          audit="none", tag="groups", path_params=_GROUP,
          responses={200: ("Stored", rs.GroupAppended), 409: _CONFLICT,
                     429: ("The group's quota is used (group_quota_exceeded)", None)}),
    Route("GET", "/v1/groups/{group_id}/messages", fetch_group_messages,
          "Messages of one epoch after a seq, oldest first (read capability of ?epoch)",
          auth=Auth.GROUP_READ,
          query=(_EPOCH, IntQuery("after", default=0, low=0, high=MAX_SEQ),
                 IntQuery("limit", default="group_fetch_limit", low=1,
                          high="group_fetch_limit")),
          body=None, rate_limit="group_read", audit="none", tag="groups",
          path_params=_GROUP, responses={200: ("A page", rs.GroupMessagePage)}),
)

__all__ = ["GROUP_ID_PATTERN", "ROUTES", "parse_group_id"]
