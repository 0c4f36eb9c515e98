"""Linked-device routes: provisioning channels, linking, listing and removing devices
(docs/devices.md)."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.protocol.fields import ACCOUNT_HEX_PATTERN
from veil.server.encoding import parse_account_id, parse_device_id
from veil.server.errors import BadRequest
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, IntQuery, PathParam, Route
from veil.server.http.routes.keys import prekey_upload
from veil.server.services.devices import DeviceLink

_CHANNEL_PATTERN = "^[0-9a-f]{20}$"


def parse_channel_id(text: str) -> bytes:
    if len(text) != 20 or any(c not in "0123456789abcdef" for c in text):
        raise BadRequest("a provisioning channel id is 20 lower-case hex digits")
    return bytes.fromhex(text)


_CHANNEL = {"channel_id": PathParam(parse_channel_id, _CHANNEL_PATTERN,
                                    "provisioning channel id, hex")}


async def open_channel(call: Call) -> web.Response:
    opened = await call.c.devices.open_channel(call.body.public_key)
    return json_response(rs.ProvisioningChannel(
        channel_id=opened.channel_id, expires=opened.expires_at,
        max_message_bytes=call.c.config.max_provisioning_bytes), status=201)


async def channel_key(call: Call) -> web.Response:
    found = await call.c.devices.channel(call.path["channel_id"])
    return json_response(rs.ProvisioningKey(
        public_key=found.public_key, expires=found.expires_at,
        max_message_bytes=call.c.config.max_provisioning_bytes))


async def post_message(call: Call) -> web.Response:
    await call.c.devices.post(call.path["channel_id"], call.body.message)
    return web.Response(status=204)


async def take_message(call: Call) -> web.Response:
    message = await call.c.devices.take(call.path["channel_id"], call.query["wait"])
    return json_response(rs.ProvisioningMessage(message=message))


async def link_device(call: Call) -> web.Response:
    body: rq.DeviceLink = call.body
    device_id = await call.c.devices.link(DeviceLink(
        account_id=call.path["account_id"], device_id=body.device_id,
        registration_id=body.registration_id, identity_key=body.identity_key,
        token=body.token, approval=body.approval, prekeys=prekey_upload(body)))
    return json_response(rs.DeviceAdded(device_id=device_id), status=201)


async def list_devices(call: Call) -> web.Response:
    found = await call.c.devices.devices(call.me.account_id)
    return json_response(rs.DeviceList(devices=[
        rs.DeviceEntry(device_id=d.device_id, registration_id=d.registration_id,
                       created_at=d.created_at,
                       approval=UNSET if d.approval is None else d.approval)
        for d in found]))


async def put_approval(call: Call) -> web.Response:
    me = call.me
    await call.c.devices.set_approval(me.account_id, me.device_id, me.registration_id,
                                      me.identity_key, call.body.approval)
    return web.Response(status=204)


async def remove_device(call: Call) -> web.Response:
    await call.c.devices.remove(call.me.account_id, call.path["device_id"])
    return web.Response(status=204)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/accounts/me/devices", list_devices,
          "This account's devices and their approvals",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="devices", responses={200: ("The devices", rs.DeviceList)}),
    Route("PUT", "/v1/accounts/me/approval", put_approval,
          "Store this device's approval by the account's identity",
          auth=Auth.DEVICE, query=(), body=rq.DeviceApprovalUpload,
          rate_limit="account_write", audit="device.approval", tag="devices",
          responses={204: ("Stored", None),
                     403: ("The approval does not verify (invalid_approval)", None)}),
    Route("DELETE", "/v1/accounts/me/devices/{device_id}", remove_device,
          "Unlink a device: its credentials, keys and queue go, its socket closes",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_write",
          audit="device.remove", tag="devices",
          responses={204: ("Removed", None),
                     404: ("No such device (device_not_found)", None),
                     409: ("The account's last device (last_device)", None)},
          path_params={"device_id": PathParam(parse_device_id, r"^[1-9][0-9]{0,8}$",
                                              "device id")}),
    Route("POST", "/v1/accounts/{account_id}/linked_devices", link_device,
          "Link a new device, authorised by the approval an existing device signed",
          auth=Auth.NONE, query=(), body=rq.DeviceLink, rate_limit="register",
          audit="device.link", tag="devices",
          responses={201: ("Linked", rs.DeviceAdded),
                     403: ("The approval does not verify, is stale or for another "
                           "identity (invalid_approval)", None),
                     404: ("No such account (account_not_found)", None),
                     409: ("The device id is in use (device_id_taken)", None)},
          path_params={"account_id": PathParam(parse_account_id, ACCOUNT_HEX_PATTERN,
                                               "account id, hex")}),
    Route("POST", "/v1/provisioning", open_channel,
          "Open an anonymous provisioning channel for a new device",
          auth=Auth.NONE, query=(), body=rq.ProvisioningOpen, rate_limit="register",
          audit="none", tag="devices",
          responses={201: ("The channel", rs.ProvisioningChannel)}),
    Route("GET", "/v1/provisioning/{channel_id}", channel_key,
          "The new device's ephemeral key (check it against the link code)",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="lookup", audit="none",
          tag="devices", path_params=_CHANNEL,
          responses={200: ("The key", rs.ProvisioningKey),
                     404: ("No such channel (provisioning_channel_not_found)", None)}),
    Route("PUT", "/v1/provisioning/{channel_id}", post_message,
          "Post the one encrypted provisioning message",
          auth=Auth.DEVICE, query=(), body=rq.ProvisioningPost, rate_limit="account_write",
          audit="device.provision", tag="devices", path_params=_CHANNEL,
          responses={204: ("Posted", None),
                     404: ("No such channel (provisioning_channel_not_found)", None),
                     409: ("A message was posted already (provisioning_message_exists)",
                           None)}),
    Route("GET", "/v1/provisioning/{channel_id}/message", take_message,
          "Take the provisioning message (the channel goes with it), waiting up to "
          "'wait' seconds for it",
          auth=Auth.NONE, query=(IntQuery("wait", default=0, low=0,
                                          high="provisioning_wait_max_s"),),
          body=None, rate_limit="lookup", audit="none", tag="devices", path_params=_CHANNEL,
          responses={200: ("The message, or null while there is none",
                           rs.ProvisioningMessage),
                     404: ("No such channel (provisioning_channel_not_found)", None)}),
)

__all__ = [
    "ROUTES",
    "parse_channel_id",
]
