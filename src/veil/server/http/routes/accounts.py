"""Account routes: registration, this account, usernames, sealed-sender access."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.protocol.fields import USERNAME_PATTERN
from veil.server.encoding import normalise_username
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, PathParam, Route
from veil.server.http.routes.keys import given, prekey_upload
from veil.server.services.accounts import Registration


async def register(call: Call) -> web.Response:
    data: rq.Registration = call.body
    result = await call.c.accounts.register(Registration(
        identity_key=data.identity_key,
        registration_id=data.registration_id,
        prekeys=prekey_upload(data),
        token=given(data.token),
        username=None if data.username is UNSET else normalise_username(data.username),
        access_key=given(data.access_key),
        unrestricted_sealed=given(data.unrestricted_sealed),
        invite=given(data.invite),
    ))
    return json_response(rs.Registered(
        account_id=result.account_id.hex(), device_id=result.device_id,
        token=UNSET if result.issued_token is None else result.issued_token,
    ), status=201)


async def whoami(call: Call) -> web.Response:
    device = call.me
    account = await call.c.accounts.account(device.account_id)
    return json_response(rs.AccountInfo(
        account_id=account.account_id.hex(),
        device_id=device.device_id,
        username=account.username,
        has_access_key=account.access_key is not None,
        unrestricted_sealed=account.unrestricted_sealed,
        devices=list(account.devices),
    ))


async def put_username(call: Call) -> web.Response:
    username = normalise_username(call.body.username)
    await call.c.accounts.set_username(call.me.account_id, username)
    return json_response(rs.UsernameSet(username=username))


async def delete_username(call: Call) -> web.Response:
    await call.c.accounts.set_username(call.me.account_id, None)
    return web.Response(status=204)


async def put_sealed_access(call: Call) -> web.Response:
    body: rq.SealedAccess = call.body
    await call.c.accounts.set_sealed_access(
        call.me.account_id, given(body.access_key), body.unrestricted_sealed
    )
    return web.Response(status=204)


async def lookup_username(call: Call) -> web.Response:
    username: str = call.path["username"]
    account_id = await call.c.accounts.lookup_username(username)
    return json_response(rs.UsernameFound(account_id=account_id.hex(), username=username))


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts", register, "Register an account with its first device",
          auth=Auth.NONE, query=(), body=rq.Registration, rate_limit="register",
          audit="account.register",
          responses={201: ("Created: account_id, device_id, token (if the server issued it)",
                           rs.Registered),
                     403: ("Registration closed, or the invite is not valid (registration_"
                           "closed, invalid_invite)", None),
                     409: ("The username is taken (username_taken)", None)},
          tag="accounts"),
    Route("GET", "/v1/accounts/me", whoami, "This account and its devices",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="accounts", responses={200: ("This account", rs.AccountInfo)}),
    Route("PUT", "/v1/accounts/me/username", put_username, "Set or change the username",
          auth=Auth.DEVICE, query=(), body=rq.UsernameRequest, rate_limit="account_write",
          audit="account.username", tag="accounts",
          responses={200: ("The username as stored (lower case)", rs.UsernameSet),
                     409: ("The username is taken (username_taken)", None)}),
    Route("DELETE", "/v1/accounts/me/username", delete_username, "Remove the username",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_write",
          audit="account.username", responses={204: ("Removed", None)}, tag="accounts"),
    Route("PUT", "/v1/accounts/me/sealed_access", put_sealed_access,
          "Set the access key and whether anyone may send sealed envelopes",
          auth=Auth.DEVICE, query=(), body=rq.SealedAccess, rate_limit="account_write",
          audit="account.sealed_access", responses={204: ("Saved", None)}, tag="accounts"),
    Route("GET", "/v1/usernames/{username}", lookup_username, "Find an account by username",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="lookup", audit="none",
          tag="accounts", responses={200: ("The account", rs.UsernameFound)},
          path_params={"username": PathParam(normalise_username, USERNAME_PATTERN,
                                             "case-insensitive")}),
)

__all__ = [
    "ROUTES",
]
