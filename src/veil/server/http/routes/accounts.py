"""Account routes: registration, this account, usernames, sealed-sender access."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from veil.server.encoding import b64encode, normalise_username
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, PathParam, Route
from veil.server.http.routes.keys import prekey_upload
from veil.server.services.accounts import Registration


async def register(call: Call) -> web.Response:
    data = call.body
    username = data.get("username")
    result = await call.c.accounts.register(Registration(
        identity_key=data["identity_key"],
        registration_id=data["registration_id"],
        prekeys=prekey_upload(data),
        token=data.get("token"),
        username=None if username is None else normalise_username(username),
        access_key=data.get("access_key"),
        unrestricted_sealed=data.get("unrestricted_sealed"),
        invite=data.get("invite"),
    ))
    out: dict[str, Any] = {"account_id": result.account_id.hex(), "device_id": result.device_id}
    if result.issued_token is not None:
        out["token"] = b64encode(result.issued_token)
    return json_response(out, status=201)


async def whoami(call: Call) -> web.Response:
    device = call.me
    account = await call.c.accounts.account(device.account_id)
    return json_response({
        "account_id": account.account_id.hex(),
        "device_id": device.device_id,
        "username": account.username,
        "has_access_key": account.access_key is not None,
        "unrestricted_sealed": account.unrestricted_sealed,
        "devices": list(account.devices),
    })


async def put_username(call: Call) -> web.Response:
    username = normalise_username(call.body["username"])
    await call.c.accounts.set_username(call.me.account_id, username)
    return json_response({"username": username})


async def delete_username(call: Call) -> web.Response:
    await call.c.accounts.set_username(call.me.account_id, None)
    return web.Response(status=204)


async def put_sealed_access(call: Call) -> web.Response:
    await call.c.accounts.set_sealed_access(
        call.me.account_id, call.body.get("access_key"), call.body["unrestricted_sealed"]
    )
    return web.Response(status=204)


async def lookup_username(call: Call) -> web.Response:
    username: str = call.path["username"]
    account_id = await call.c.accounts.lookup_username(username)
    return json_response({"account_id": account_id.hex(), "username": username})


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts", register, "Register an account with its first device",
          auth=Auth.NONE, query=(), body="registration", rate_limit="register",
          audit="account.register", responses={201: "Created: account_id, device_id, token?"},
          tag="accounts"),
    Route("GET", "/v1/accounts/me", whoami, "This account and its devices",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="accounts"),
    Route("PUT", "/v1/accounts/me/username", put_username, "Set or change the username",
          auth=Auth.DEVICE, query=(), body="username", rate_limit="account_write",
          audit="account.username", tag="accounts"),
    Route("DELETE", "/v1/accounts/me/username", delete_username, "Remove the username",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_write",
          audit="account.username", responses={204: "Removed"}, tag="accounts"),
    Route("PUT", "/v1/accounts/me/sealed_access", put_sealed_access,
          "Set the access key and whether anyone may send sealed envelopes",
          auth=Auth.DEVICE, query=(), body="sealed_access", rate_limit="account_write",
          audit="account.sealed_access", responses={204: "Saved"}, tag="accounts"),
    Route("GET", "/v1/usernames/{username}", lookup_username, "Find an account by username",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="lookup", audit="none",
          tag="accounts",
          path_params={"username": PathParam(normalise_username, "^[A-Za-z0-9_]{3,32}$",
                                             "case-insensitive")}),
)

__all__ = [
    "ROUTES",
]
