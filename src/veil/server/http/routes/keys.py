"""Key directory routes: publish prekeys, read this device's stock, claim bundles."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from msgspec import UNSET

from veil.protocol import given
from veil.protocol import requests as rq
from veil.protocol import responses as rs
from veil.protocol.fields import ACCOUNT_HEX_PATTERN
from veil.server.encoding import parse_account_id, parse_device_id
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, PathParam, Route
from veil.server.services.keys import PreKeyUpload
from veil.server.storage.base import DeviceBundle, OneTimeKey, PreKeyCounts


def prekey_upload(body: rq.PrekeyUpload) -> PreKeyUpload:
    """The prekey fields of a decoded body (``PUT /v1/keys`` and registration)."""
    def keys(items: Any) -> list[OneTimeKey]:
        return [] if items is UNSET else [OneTimeKey(k.key_id, k.key) for k in items]
    return PreKeyUpload(
        signed_prekey=given(body.signed_prekey),
        last_resort_kem_prekey=given(body.last_resort_kem_prekey),
        one_time_prekeys=keys(body.one_time_prekeys),
        one_time_kem_prekeys=keys(body.one_time_kem_prekeys),
    )


def _status(counts: PreKeyCounts, low: bool) -> rs.PrekeyStatus:
    return rs.PrekeyStatus(
        one_time_prekeys=counts.one_time_prekeys,
        one_time_kem_prekeys=counts.one_time_kem_prekeys,
        has_signed_prekey=counts.has_signed_prekey,
        has_last_resort_kem_prekey=counts.has_last_resort_kem_prekey,
        low=low,
    )


def _one_time(key: OneTimeKey | None) -> rs.OneTimeKey | None:
    return None if key is None else rs.OneTimeKey(key_id=key.key_id, key=key.key)


def _bundle(b: DeviceBundle) -> rs.DeviceBundle:
    return rs.DeviceBundle(
        device_id=b.device_id,
        registration_id=b.registration_id,
        identity_key=b.identity_key,
        signed_prekey=b.signed_prekey,
        last_resort_kem_prekey=b.last_resort_kem_prekey,
        one_time_prekey=_one_time(b.one_time_prekey),
        one_time_kem_prekey=_one_time(b.one_time_kem_prekey),
        approval=UNSET if b.approval is None else b.approval,
    )


ACCOUNT_ID_PATTERN = ACCOUNT_HEX_PATTERN


def _device_or_all(text: str) -> int | None:
    return None if text == "*" else parse_device_id(text)


async def put_keys(call: Call) -> web.Response:
    device = call.me
    status = await call.c.keys.upload(
        device.account_id, device.device_id, device.identity_key, prekey_upload(call.body)
    )
    return json_response(_status(status.counts, status.low))


async def key_status(call: Call) -> web.Response:
    status = await call.c.keys.status(call.me.account_id, call.me.device_id)
    return json_response(_status(status.counts, status.low))


async def get_bundles(call: Call) -> web.Response:
    account_id: bytes = call.path["account_id"]
    bundles = await call.c.keys.fetch(
        account_id, call.path["device_id"], authenticated=call.device is not None,
        access_key=call.access_key,
    )
    return json_response(rs.Bundles(
        account_id=account_id.hex(), devices=[_bundle(b) for b in bundles]))


ROUTES: tuple[Route, ...] = (
    Route("PUT", "/v1/keys", put_keys, "Publish or replenish this device's prekeys",
          auth=Auth.DEVICE, query=(), body=rq.PrekeyUpload, rate_limit="keys_upload",
          audit="keys.upload", tag="keys",
          responses={200: ("The stock after the upload", rs.PrekeyStatus)}),
    Route("GET", "/v1/keys/status", key_status, "Prekey stock of this device",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="keys", responses={200: ("The stock", rs.PrekeyStatus)}),
    Route("GET", "/v1/keys/{account_id}/{device_id}", get_bundles,
          "Claim prekey bundles of one device, or of all with device_id '*'",
          auth=Auth.DEVICE_OR_ACCESS_KEY, query=(), body=None, rate_limit="keys_claim",
          audit="none", tag="keys",
          responses={200: ("One bundle per device; each one-time key is handed out once",
                           rs.Bundles)},
          path_params={
              "account_id": PathParam(parse_account_id, ACCOUNT_ID_PATTERN, "account id, hex"),
              # Device ids go up to 2^31 - 1; the document states the first 999 999 999.
              "device_id": PathParam(_device_or_all, r"^(?:\*|[1-9][0-9]{0,8})$",
                                     "a device id, or * for every device"),
          }),
)

__all__ = [
    "ROUTES",
    "given",
    "prekey_upload",
]
