"""The MLS KeyPackage directory (issue 11 §1): devices publish, inviters claim.

Each device publishes one-time KeyPackages (each handed out at most once, removed
atomically when claimed) and at most one last-resort KeyPackage per cipher suite (handed
out when the one-time stock of that suite is empty, and kept). Cipher suite 1
(MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519) must be among every upload; the other
suites ``veil.core.mls`` implements are accepted too.

Every KeyPackage is judged on upload by :func:`parse_key_packages`, so the directory
never serves one the claiming client would reject: it decodes (bare, or wrapped in an
MLSMessage), its suite is supported, its lifetime covers now and is not longer than
``max_key_package_lifetime_s``, and RFC 9420 §10.1 holds (signature, version, init key
distinct from the encryption key, leaf node signature, capabilities, a non-empty basic
credential). A failure is a 422 naming the field: ``key_packages[3]: signature does
not verify``. The server does not tie the credential to the account: clients judge
credentials (the server cannot, and must not be trusted to).

When a claim takes a device's one-time stock below ``key_package_low_threshold`` the
device hears an ``mls_keys_low`` notice once (and on every connect while it is low).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import get_suite, is_supported
from veil.core.mls.errors import MlsError
from veil.core.mls.leaf import KeyPackage
from veil.core.mls.messages import MLSMessage
from veil.core.mls.validation import validate_key_package
from veil.server.bus import Bus, KeyPackagesLow
from veil.server.config import ServerConfig
from veil.server.errors import (
    DeviceNotFound,
    DuplicateKeyPackage,
    InvalidAccessKey,
    PayloadTooLarge,
    ValidationFailed,
)
from veil.server.storage.base import (
    ClaimedKeyPackage,
    KeyPackageCounts,
    KeyPackageRecord,
    Storage,
)

REQUIRED_SUITE = 1
_DAY = 24 * 3600


@dataclass(frozen=True)
class KeyPackageStatus:
    counts: KeyPackageCounts
    low: bool

    def notice(self) -> KeyPackagesLow | None:
        """What the device hears on connect: a notice if it publishes and runs low."""
        return KeyPackagesLow(self.counts.one_time) if self.low else None


def _decode(data: bytes) -> KeyPackage:
    try:
        msg = decode_all(data, MLSMessage.read)
    except MlsError:
        return decode_all(data, KeyPackage.read)
    if not isinstance(msg.body, KeyPackage):
        raise ValidationFailed("an MLSMessage that is not a KeyPackage")
    return msg.body


def _reason(exc: MlsError) -> str:
    text = str(exc)
    for prefix in ("KeyPackage leaf node: ", "KeyPackage "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def parse_key_package(
    name: str, data: bytes, *, last_resort: bool, now_s: int, config: ServerConfig
) -> KeyPackageRecord:
    """Judge one KeyPackage (see the module docstring); raises ValidationFailed naming
    ``name``, or PayloadTooLarge."""
    if len(data) > config.max_key_package_bytes:
        raise PayloadTooLarge(f"{name} is larger than {config.max_key_package_bytes} bytes")
    try:
        kp = _decode(data)
        if not is_supported(kp.cipher_suite):
            raise ValidationFailed(f"{name}: cipher suite {kp.cipher_suite} is not supported")
        lifetime = kp.leaf_node.lifetime
        if lifetime is None:
            raise ValidationFailed(f"{name}: the leaf node has no lifetime")
        if lifetime.not_after < now_s:
            raise ValidationFailed(f"{name}: expired")
        if lifetime.not_before > now_s:
            raise ValidationFailed(f"{name}: not valid yet")
        if lifetime.not_after - now_s > config.max_key_package_lifetime_s:
            days = config.max_key_package_lifetime_s // _DAY
            raise ValidationFailed(f"{name}: lifetime ends more than {days} days from now")
        suite = get_suite(kp.cipher_suite)
        validate_key_package(suite, kp, now=now_s)
        ref = kp.ref(suite)
    except ValidationFailed:
        raise
    except MlsError as exc:
        raise ValidationFailed(f"{name}: {_reason(exc)}") from None
    return KeyPackageRecord(ref, kp.cipher_suite, last_resort, lifetime.not_after, data)


def parse_key_packages(
    one_time: Sequence[bytes], last_resort: bytes | None, *, now_s: int,
    config: ServerConfig,
) -> list[KeyPackageRecord]:
    """Judge a whole upload: count, every KeyPackage, no one twice, suite 1 among them."""
    if len(one_time) > config.max_key_packages_per_upload:
        raise PayloadTooLarge(
            f"an upload carries at most {config.max_key_packages_per_upload} KeyPackages")
    if not one_time and last_resort is None:
        raise ValidationFailed("key_packages: the upload carries no KeyPackage")
    records = [parse_key_package(f"key_packages[{i}]", data, last_resort=False, now_s=now_s,
                                 config=config) for i, data in enumerate(one_time)]
    if last_resort is not None:
        records.append(parse_key_package("last_resort", last_resort, last_resort=True,
                                         now_s=now_s, config=config))
    seen: set[bytes] = set()
    for i, record in enumerate(records):
        if record.ref in seen:
            where = "last_resort" if record.last_resort else f"key_packages[{i}]"
            raise DuplicateKeyPackage(f"{where} appears twice in the upload")
        seen.add(record.ref)
    if all(r.cipher_suite != REQUIRED_SUITE for r in records):
        raise ValidationFailed(
            f"key_packages: at least one KeyPackage must use cipher suite {REQUIRED_SUITE}")
    return records


class KeyPackageService:
    def __init__(self, storage: Storage, bus: Bus, config: ServerConfig,
                 clock_ms: Callable[[], int]) -> None:
        self._storage = storage
        self._bus = bus
        self._config = config
        self._clock_ms = clock_ms

    def _low(self, counts: KeyPackageCounts) -> bool:
        published = counts.one_time > 0 or counts.last_resort > 0
        return published and counts.one_time < self._config.key_package_low_threshold

    async def upload(
        self, account_id: bytes, device_id: int, one_time: Sequence[bytes],
        last_resort: bytes | None,
    ) -> KeyPackageStatus:
        now_s = self._clock_ms() // 1000
        # Signature checks in a worker thread: 100 KeyPackages are milliseconds of
        # Ed25519 the event loop must not wait on.
        records = await asyncio.to_thread(parse_key_packages, one_time, last_resort,
                                          now_s=now_s, config=self._config)
        counts = await self._storage.store_key_packages(
            account_id, device_id, records, self._config.max_key_packages_stored)
        return KeyPackageStatus(counts, self._low(counts))

    async def status(self, account_id: bytes, device_id: int) -> KeyPackageStatus:
        counts = await self._storage.key_package_counts(account_id, device_id)
        return KeyPackageStatus(counts, self._low(counts))

    async def claim(
        self, account_id: bytes, cipher_suite: int, *, authenticated: bool,
        access_key: bytes | None,
    ) -> list[ClaimedKeyPackage]:
        """One KeyPackage per device; callers are a registered device, or hold the
        account's access key (or the account accepts sealed senders from anyone), as
        for prekey bundles (services/keys.py)."""
        if not authenticated:
            account = await self._storage.get_account(account_id)
            if account is None or (not account.unrestricted_sealed and (
                access_key is None or account.access_key is None
                or not hmac.compare_digest(access_key, account.access_key)
            )):
                raise InvalidAccessKey("claiming KeyPackages needs credentials or an "
                                       "access key")
        claimed = await self._storage.claim_key_packages(
            account_id, cipher_suite, self._clock_ms() // 1000)
        if not claimed:
            raise DeviceNotFound("no device of that account has a KeyPackage of that "
                                 "cipher suite")
        threshold = self._config.key_package_low_threshold
        for item in claimed:
            # Only the claim that crosses the threshold notifies (anyone may claim).
            if not item.last_resort and item.remaining.one_time == threshold - 1:
                self._bus.publish((account_id, item.device_id),
                                  KeyPackagesLow(item.remaining.one_time))
        return claimed

__all__ = [
    "REQUIRED_SUITE",
    "KeyPackageService",
    "KeyPackageStatus",
    "parse_key_package",
    "parse_key_packages",
]
