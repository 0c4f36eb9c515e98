"""MLS KeyPackage directory routes: publish, read this device's stock, claim."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from veil.protocol import given
from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.server.encoding import parse_account_id
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, IntQuery, PathParam, Route
from veil.server.http.routes.keys import ACCOUNT_ID_PATTERN
from veil.server.services.key_packages import REQUIRED_SUITE, KeyPackageStatus


def _status(status: KeyPackageStatus) -> rs.KeyPackageStatus:
    return rs.KeyPackageStatus(one_time=status.counts.one_time,
                               last_resort=status.counts.last_resort, low=status.low)


async def put_key_packages(call: Call) -> web.Response:
    body: rq.KeyPackageUpload = call.body
    one_time = [] if body.key_packages is UNSET else list(body.key_packages)
    status = await call.c.key_packages.upload(
        call.me.account_id, call.me.device_id, one_time, given(body.last_resort))
    return json_response(_status(status))


async def key_package_status(call: Call) -> web.Response:
    return json_response(_status(
        await call.c.key_packages.status(call.me.account_id, call.me.device_id)))


async def claim_key_packages(call: Call) -> web.Response:
    account_id: bytes = call.path["account_id"]
    claimed = await call.c.key_packages.claim(
        account_id, call.query["cipher_suite"], authenticated=call.device is not None,
        access_key=call.access_key)
    return json_response(rs.MlsKeyPackages(account_id=account_id.hex(), devices=[
        rs.MlsDeviceKeyPackage(device_id=k.device_id, key_package=k.data,
                               last_resort=k.last_resort) for k in claimed]))


# Before keys.ROUTES in the table: /v1/keys/mls/{account_id} would otherwise match
# /v1/keys/{account_id}/{device_id} first.
ROUTES: tuple[Route, ...] = (
    Route("PUT", "/v1/keys/mls", put_key_packages,
          "Publish MLS KeyPackages of this device (one-time ones, a last-resort one)",
          auth=Auth.DEVICE, query=(), body=rq.KeyPackageUpload,
          rate_limit="keys_upload", audit="keys.mls_upload", tag="keys",
          responses={
              200: ("The stock after the upload", rs.KeyPackageStatus),
              409: ("A KeyPackage is stored already (duplicate_key_package)", None)}),
    Route("GET", "/v1/keys/mls", key_package_status, "MLS KeyPackage stock of this device",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="keys", responses={200: ("The stock", rs.KeyPackageStatus)}),
    Route("GET", "/v1/keys/mls/{account_id}", claim_key_packages,
          "Claim one MLS KeyPackage per device of an account (one-time first)",
          auth=Auth.DEVICE_OR_ACCESS_KEY,
          query=(IntQuery("cipher_suite", default=REQUIRED_SUITE, low=1, high=0xFFFF),),
          body=None, rate_limit="key_packages_claim", audit="none", tag="keys",
          responses={200: ("One KeyPackage per device that has one of the suite; each "
                           "one-time KeyPackage is handed out once", rs.MlsKeyPackages)},
          path_params={"account_id": PathParam(parse_account_id, ACCOUNT_ID_PATTERN,
                                               "account id, hex")}),
)

__all__ = ["ROUTES"]
