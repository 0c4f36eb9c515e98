"""The key directory: devices publish prekeys, others fetch bundles to start sessions.

Slots per device (PQXDH, Signal specification): ``identity_key`` (set at registration,
immutable), ``signed_prekey`` and ``last_resort_kem_prekey`` (one each, replaceable),
``one_time_prekeys`` and ``one_time_kem_prekeys`` (stocks of single-use keys, each with
a client-chosen ``key_id``). To the server every key is an opaque blob: the only place
blobs are judged is :func:`validate_prekey_upload`.

A bundle fetch hands out at most one one-time key of each kind per device, removing it
atomically; when the KEM stock is empty the client falls back to the last-resort KEM
prekey. When a claim leaves a stock below ``prekey_low_threshold`` the owner device is
told (a ``keys_low`` WebSocket event) so it can replenish.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from veil.server.bus import Bus
from veil.server.config import ServerConfig
from veil.server.errors import (
    DeviceNotFound,
    DuplicatePreKey,
    InvalidAccessKey,
    PayloadTooLarge,
    ValidationFailed,
)
from veil.server.storage.base import DeviceBundle, OneTimeKey, PreKeyCounts, Storage

# Size bounds of the opaque blobs (bytes). Generous enough for the encodings of
# veil.core (X25519/Ed25519 keys of 32 bytes, ML-KEM-768 public keys of 1184 bytes,
# 64-byte signatures, key ids and type prefixes), tight enough to stop abuse.
IDENTITY_KEY_BYTES = (32, 256)
SIGNED_PREKEY_BYTES = (32, 1024)
ONE_TIME_PREKEY_BYTES = (32, 512)
KEM_PREKEY_BYTES = (1184, 4096)
MAX_KEY_ID = (1 << 31) - 1


@dataclass(frozen=True)
class PreKeyUpload:
    signed_prekey: bytes | None = None
    last_resort_kem_prekey: bytes | None = None
    one_time_prekeys: Sequence[OneTimeKey] = ()
    one_time_kem_prekeys: Sequence[OneTimeKey] = ()


@dataclass(frozen=True)
class KeyStatus:
    counts: PreKeyCounts
    low: bool


def _check_size(name: str, blob: bytes, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if len(blob) > high:
        raise PayloadTooLarge(f"{name} is larger than {high} bytes")
    if len(blob) < low:
        raise ValidationFailed(f"{name} is shorter than {low} bytes")


def validate_prekey_upload(
    upload: PreKeyUpload, *, identity_key: bytes, config: ServerConfig
) -> None:
    """Judge a prekey upload before it is stored: the one place blobs are validated.

    Today this checks structure and sizes: blob lengths, key-id ranges, no key id twice
    in one upload, at most ``max_prekeys_per_upload`` keys. Signature verification of
    the signed and KEM prekeys under ``identity_key`` (``veil.core.keys``) belongs here.
    """
    _check_size("identity_key", identity_key, IDENTITY_KEY_BYTES)
    if upload.signed_prekey is not None:
        _check_size("signed_prekey", upload.signed_prekey, SIGNED_PREKEY_BYTES)
    if upload.last_resort_kem_prekey is not None:
        _check_size("last_resort_kem_prekey", upload.last_resort_kem_prekey, KEM_PREKEY_BYTES)
    total = len(upload.one_time_prekeys) + len(upload.one_time_kem_prekeys)
    if total > config.max_prekeys_per_upload:
        raise PayloadTooLarge(
            f"an upload carries at most {config.max_prekeys_per_upload} one-time keys"
        )
    for name, keys, bounds in (
        ("one_time_prekeys", upload.one_time_prekeys, ONE_TIME_PREKEY_BYTES),
        ("one_time_kem_prekeys", upload.one_time_kem_prekeys, KEM_PREKEY_BYTES),
    ):
        seen: set[int] = set()
        for i, key in enumerate(keys):
            if not 0 <= key.key_id <= MAX_KEY_ID:
                raise ValidationFailed(f"{name}[{i}].key_id is out of range")
            if key.key_id in seen:
                raise DuplicatePreKey(f"{name}[{i}].key_id appears twice in the upload")
            seen.add(key.key_id)
            _check_size(f"{name}[{i}].key", key.key, bounds)


class KeyService:
    def __init__(self, storage: Storage, bus: Bus, config: ServerConfig) -> None:
        self._storage = storage
        self._bus = bus
        self._config = config

    def _low(self, counts: PreKeyCounts) -> bool:
        threshold = self._config.prekey_low_threshold
        return (
            counts.one_time_prekeys < threshold
            or counts.one_time_kem_prekeys < threshold
            or not counts.has_signed_prekey
            or not counts.has_last_resort_kem_prekey
        )

    async def upload(
        self, account_id: bytes, device_id: int, identity_key: bytes, upload: PreKeyUpload
    ) -> KeyStatus:
        validate_prekey_upload(upload, identity_key=identity_key, config=self._config)
        counts = await self._storage.store_prekeys(
            account_id, device_id,
            signed_prekey=upload.signed_prekey,
            last_resort_kem_prekey=upload.last_resort_kem_prekey,
            one_time_prekeys=upload.one_time_prekeys,
            one_time_kem_prekeys=upload.one_time_kem_prekeys,
            max_stored=self._config.max_prekeys_stored,
        )
        return KeyStatus(counts, self._low(counts))

    async def status(self, account_id: bytes, device_id: int) -> KeyStatus:
        counts = await self._storage.prekey_counts(account_id, device_id)
        return KeyStatus(counts, self._low(counts))

    async def fetch(
        self, account_id: bytes, device_id: int | None, *, authenticated: bool,
        access_key: bytes | None,
    ) -> list[DeviceBundle]:
        """Claim bundles. Callers are a registered device, or hold the access key."""
        if not authenticated:
            account = await self._storage.get_account(account_id)
            if account is None or (not account.unrestricted_sealed and (
                access_key is None or account.access_key is None
                or not hmac.compare_digest(access_key, account.access_key)
            )):
                raise InvalidAccessKey("fetching keys needs credentials or an access key")
        bundles = await self._storage.claim_bundles(account_id, device_id)
        if not bundles:
            raise DeviceNotFound("no such account or device")
        for bundle in bundles:
            if self._low(bundle.remaining):
                self._bus.publish((account_id, bundle.device_id), {
                    "type": "keys_low",
                    "one_time_prekeys": bundle.remaining.one_time_prekeys,
                    "one_time_kem_prekeys": bundle.remaining.one_time_kem_prekeys,
                })
        return bundles
