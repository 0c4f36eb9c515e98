"""Account routes: registration, this account, usernames, sealed-sender access."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.protocol.fields import USERNAME_PATTERN
from veil.server.encoding import normalise_username
from veil.server.errors import InvalidInvite, InvalidProofOfWork
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, PathParam, Route
from veil.server.http.routes.keys import given, prekey_upload
from veil.server.protection import events as ev
from veil.server.protection.policy import protection_of, request_key
from veil.server.services.accounts import Registration


async def register(call: Call) -> web.Response:
    try:
        return await _register(call)
    except (InvalidInvite, InvalidProofOfWork):
        protection = protection_of(call.c)
        protection.events.emit(ev.REGISTRATION_REFUSED, request_key(protection, call.request))
        raise


async def challenge(call: Call) -> web.Response:
    """A proof-of-work challenge for registration (issue 13 §2; protection/pow.py)."""
    issued = protection_of(call.c).pow.challenge()
    return json_response(rs.PowChallenge(
        challenge=issued.text, bits=issued.bits, algorithm="sha256",
        expires_in_s=issued.expires_in_s, required=call.c.config.registration == "pow"))


async def _register(call: Call) -> web.Response:
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
        proof_of_work=None if data.proof_of_work is UNSET
        else (data.proof_of_work.challenge, data.proof_of_work.nonce),
    ), proof=protection_of(call.c).pow)
    protection = protection_of(call.c)
    protection.events.emit(ev.REGISTRATION, request_key(protection, call.request))
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
    Route("GET", "/v1/accounts/challenge", challenge,
          "A proof-of-work challenge for registration (servers in mode pow)",
          auth=Auth.NONE, query=(), body=None, rate_limit="challenge", audit="none",
          tag="accounts", responses={200: ("The challenge", rs.PowChallenge)}),
    Route("POST", "/v1/accounts", register, "Register an account with its first device",
          auth=Auth.NONE, query=(), body=rq.Registration, rate_limit="register",
          audit="account.register",
          responses={201: ("Created: account_id, device_id, token (if the server issued it)",
                           rs.Registered),
                     403: ("Registration closed, the invite is not valid, or a proof of "
                           "work is needed or wrong (registration_closed, invalid_invite, "
                           "proof_of_work_required, invalid_proof_of_work)", None),
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
