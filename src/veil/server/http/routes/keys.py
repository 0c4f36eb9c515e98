"""Key directory routes: publish prekeys, read this device's stock, claim bundles."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from veil.server.encoding import b64encode, parse_account_id, parse_device_id
from veil.server.http.context import json_response
from veil.server.http.endpoint import Auth, Call, PathParam, Route
from veil.server.services.keys import PreKeyUpload
from veil.server.storage.base import DeviceBundle, OneTimeKey, PreKeyCounts


def prekey_upload(data: dict[str, Any]) -> PreKeyUpload:
    """The prekey fields of a validated body (``PUT /v1/keys`` and registration)."""

    def keys(name: str) -> list[OneTimeKey]:
        return [OneTimeKey(k["key_id"], k["key"]) for k in data.get(name, [])]

    return PreKeyUpload(
        signed_prekey=data.get("signed_prekey"),
        last_resort_kem_prekey=data.get("last_resort_kem_prekey"),
        one_time_prekeys=keys("one_time_prekeys"),
        one_time_kem_prekeys=keys("one_time_kem_prekeys"),
    )


def _counts(counts: PreKeyCounts, low: bool) -> dict[str, Any]:
    return {
        "one_time_prekeys": counts.one_time_prekeys,
        "one_time_kem_prekeys": counts.one_time_kem_prekeys,
        "has_signed_prekey": counts.has_signed_prekey,
        "has_last_resort_kem_prekey": counts.has_last_resort_kem_prekey,
        "low": low,
    }


def _one_time(key: OneTimeKey | None) -> dict[str, Any] | None:
    return None if key is None else {"key_id": key.key_id, "key": b64encode(key.key)}


def _opt64(blob: bytes | None) -> str | None:
    return None if blob is None else b64encode(blob)


def _bundle(b: DeviceBundle) -> dict[str, Any]:
    return {
        "device_id": b.device_id,
        "registration_id": b.registration_id,
        "identity_key": b64encode(b.identity_key),
        "signed_prekey": _opt64(b.signed_prekey),
        "last_resort_kem_prekey": _opt64(b.last_resort_kem_prekey),
        "one_time_prekey": _one_time(b.one_time_prekey),
        "one_time_kem_prekey": _one_time(b.one_time_kem_prekey),
    }


ACCOUNT_ID_PATTERN = r"^[0-9a-f]{32}$"


def _device_or_all(text: str) -> int | None:
    return None if text == "*" else parse_device_id(text)


async def put_keys(call: Call) -> web.Response:
    device = call.me
    status = await call.c.keys.upload(
        device.account_id, device.device_id, device.identity_key, prekey_upload(call.body)
    )
    return json_response(_counts(status.counts, status.low))


async def key_status(call: Call) -> web.Response:
    status = await call.c.keys.status(call.me.account_id, call.me.device_id)
    return json_response(_counts(status.counts, status.low))


async def get_bundles(call: Call) -> web.Response:
    account_id: bytes = call.path["account_id"]
    bundles = await call.c.keys.fetch(
        account_id, call.path["device_id"], authenticated=call.device is not None,
        access_key=call.access_key,
    )
    return json_response({
        "account_id": account_id.hex(), "devices": [_bundle(b) for b in bundles],
    })


ROUTES: tuple[Route, ...] = (
    Route("PUT", "/v1/keys", put_keys, "Publish or replenish this device's prekeys",
          auth=Auth.DEVICE, query=(), body="prekeys", rate_limit="keys_upload",
          audit="keys.upload", tag="keys"),
    Route("GET", "/v1/keys/status", key_status, "Prekey stock of this device",
          auth=Auth.DEVICE, query=(), body=None, rate_limit="account_read", audit="none",
          tag="keys"),
    Route("GET", "/v1/keys/{account_id}/{device_id}", get_bundles,
          "Claim prekey bundles of one device, or of all with device_id '*'",
          auth=Auth.DEVICE_OR_ACCESS_KEY, query=(), body=None, rate_limit="keys_claim",
          audit="none", tag="keys",
          path_params={
              "account_id": PathParam(parse_account_id, ACCOUNT_ID_PATTERN, "account id, hex"),
              # Device ids go up to 2^31 - 1; the document states the first 999 999 999.
              "device_id": PathParam(_device_or_all, r"^(?:\*|[1-9][0-9]{0,8})$",
                                     "a device id, or * for every device"),
          }),
)

__all__ = [
    "ROUTES",
    "prekey_upload",
]
