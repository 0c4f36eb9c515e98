"""The key directory: devices publish prekeys, others fetch bundles to start sessions.

Slots per device (PQXDH, Signal specification): ``identity_key`` (set at registration,
immutable), ``signed_prekey`` and ``last_resort_kem_prekey`` (one each, replaceable),
``one_time_prekeys`` and ``one_time_kem_prekeys`` (stocks of single-use keys, each with
a client-chosen ``key_id``). Keys are stored and handed out as the client's
``veil.core.keys`` encodings; the only place they are judged is
:func:`validate_prekey_upload`, which checks every signature under the device's identity
so the directory never serves a record the fetching client would reject.

A bundle fetch hands out at most one one-time key of each kind per device, removing it
atomically; when the KEM stock is empty the client falls back to the last-resort KEM
prekey. When a claim takes a stock below ``prekey_low_threshold`` (from the threshold to
one less) the owner device is told once (a ``keys_low`` WebSocket event) so it can
replenish; later claims do not repeat it (the device also hears it on every connect).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from veil.core.errors import CoreError, InvalidSignature
from veil.core.keys import (
    IdentityPublicKey,
    KemPreKeyPublic,
    OneTimePreKeyPublic,
    SignedPreKeyPublic,
)
from veil.server.bus import Bus, KeysLow
from veil.server.config import ServerConfig
from veil.server.errors import (
    DeviceNotFound,
    DuplicatePreKey,
    InvalidAccessKey,
    PayloadTooLarge,
    ValidationFailed,
)
from veil.server.storage.base import DeviceBundle, OneTimeKey, PreKeyCounts, Storage

# Size bounds of the records (bytes), checked before any parsing so oversized input costs
# nothing. Generous enough for the encodings of veil.core (X25519/Ed25519 keys of 32
# bytes, ML-KEM-768 public keys of 1184 bytes, 64-byte signatures, key ids and version
# bytes), tight enough to stop abuse; the exact layout is judged by parsing.
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

    def notice(self) -> KeysLow | None:
        """What the device hears when it connects: a ``KeysLow`` if the stock is low."""
        return _keys_low(self.counts) if self.low else None


def _keys_low(counts: PreKeyCounts) -> KeysLow:
    return KeysLow(counts.one_time_prekeys, counts.one_time_kem_prekeys)


def _check_size(name: str, blob: bytes, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if len(blob) > high:
        raise PayloadTooLarge(f"{name} is larger than {high} bytes")
    if len(blob) < low:
        raise ValidationFailed(f"{name} is shorter than {low} bytes")


def _rejection(name: str, exc: CoreError) -> ValidationFailed:
    """One line naming the field. Core messages start with their own structure name
    ("ML-KEM prekey: truncated"); the field name replaces it, as it is what the client
    sent."""
    if isinstance(exc, InvalidSignature):
        reason = "signature does not verify"
    else:
        reason = str(exc).split(": ", 1)[-1]
    return ValidationFailed(f"{name}: {reason}")


def _check_key_id(name: str, embedded: int, uploaded: int) -> None:
    # The directory deduplicates and hands out by the uploaded id while clients act on
    # the embedded one; if they could differ, one record could be stocked twice.
    if embedded != uploaded:
        raise ValidationFailed(
            f"{name}: embedded key_id {embedded} differs from key_id {uploaded}"
        )


def _check_records(upload: PreKeyUpload, identity_key: bytes) -> None:
    """Parse and verify every record; a CoreError becomes a ValidationFailed naming the
    field it came from, so a client mistake is a 422 and never a 500."""
    name = "identity_key"
    try:
        identity = IdentityPublicKey.from_bytes(identity_key)
        if upload.signed_prekey is not None:
            name = "signed_prekey"
            SignedPreKeyPublic.from_bytes(upload.signed_prekey, identity)
        if upload.last_resort_kem_prekey is not None:
            name = "last_resort_kem_prekey"
            last = KemPreKeyPublic.from_bytes(upload.last_resort_kem_prekey, identity)
            if not last.last_resort:
                # Served to every initiator once the stock is empty: a one-time record
                # here would be reused, and clients refuse such bundles anyway.
                raise ValidationFailed(f"{name}: a one-time ML-KEM prekey, not a last-resort one")
        for i, key in enumerate(upload.one_time_prekeys):
            name = f"one_time_prekeys[{i}]"
            _check_key_id(name, OneTimePreKeyPublic.from_bytes(key.key).key_id, key.key_id)
        for i, key in enumerate(upload.one_time_kem_prekeys):
            name = f"one_time_kem_prekeys[{i}]"
            kem = KemPreKeyPublic.from_bytes(key.key, identity)
            if kem.last_resort:
                raise ValidationFailed(f"{name}: a last-resort ML-KEM prekey, not a one-time one")
            _check_key_id(name, kem.key_id, key.key_id)
    except CoreError as exc:
        raise _rejection(name, exc) from None


def validate_prekey_upload(
    upload: PreKeyUpload, *, identity_key: bytes, config: ServerConfig
) -> None:
    """Judge a prekey upload before it is stored: the one place blobs are validated.

    Cheap checks come first: blob lengths, key-id ranges, no key id twice in one upload,
    at most ``max_prekeys_per_upload`` keys. Then the cryptography (``veil.core.keys``):
    ``identity_key`` must be a Veil identity whose Ed25519 key certifies its X25519 key
    (this also runs at registration); ``signed_prekey`` and every ML-KEM prekey must be
    signed by it; the last-resort slot must hold a last-resort ML-KEM record and the
    one-time KEM stock one-time records; each one-time record's embedded key id must be
    the ``key_id`` it is uploaded under, since clients look their secrets up by it.
    Any failure is a :class:`ValidationFailed` naming the field and index.
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
    _check_records(upload, identity_key)


async def validate_prekey_upload_off_loop(
    upload: PreKeyUpload, *, identity_key: bytes, config: ServerConfig
) -> None:
    """:func:`validate_prekey_upload` in a worker thread: an upload of 200 ML-KEM
    records is tens of milliseconds of signature checks the event loop must not wait on."""
    await asyncio.to_thread(
        validate_prekey_upload, upload, identity_key=identity_key, config=config
    )


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
        await validate_prekey_upload_off_loop(upload, identity_key=identity_key,
                                              config=self._config)
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
        threshold = self._config.prekey_low_threshold
        for bundle in bundles:
            # Only the claim that crosses the threshold notifies: anyone may claim, and
            # a notice per claim would be a flood the owner's socket has to carry.
            left = bundle.remaining
            if (
                bundle.one_time_prekey is not None and left.one_time_prekeys == threshold - 1
            ) or (
                bundle.one_time_kem_prekey is not None
                and left.one_time_kem_prekeys == threshold - 1
            ):
                self._bus.publish((account_id, bundle.device_id), _keys_low(left))
        return bundles

__all__ = [
    "IDENTITY_KEY_BYTES",
    "KEM_PREKEY_BYTES",
    "MAX_KEY_ID",
    "ONE_TIME_PREKEY_BYTES",
    "SIGNED_PREKEY_BYTES",
    "KeyService",
    "PreKeyUpload",
    "validate_prekey_upload",
    "validate_prekey_upload_off_loop",
]
