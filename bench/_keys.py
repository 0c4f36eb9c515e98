"""Shared by bench/attack.py and its attackers: real prekey records and registrations.

The server verifies every signed prekey, so the records are real ``veil.core.keys``
records signed by one identity that every bench account shares (the server does not
mind accounts sharing an identity). One-time records are made once per process and
reused by every registration: generating 200 fresh ML-KEM keys per account would make
the load generator, not the server, the bottleneck of a registration storm.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veil.core.keys import (
    IdentityKeyPair,
    KemPreKeyPublic,
    OneTimePreKeyPublic,
    SignedPreKeyPublic,
)

ONE_TIME_BATCH = 100  # what veil.client uploads at registration (prekey_store.ONE_TIME_BATCH)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@functools.cache
def identity() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


def _x25519() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


def _mlkem() -> bytes:
    return mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()


@functools.cache
def full_prekeys() -> dict[str, Any]:
    """A full upload as a new client sends it: signed prekey, last-resort KEM prekey and
    ONE_TIME_BATCH one-time X25519 and ML-KEM prekeys each."""
    ident = identity()
    return {
        "signed_prekey": b64(SignedPreKeyPublic.create(ident, 1, _x25519()).to_bytes()),
        "last_resort_kem_prekey": b64(KemPreKeyPublic.create(ident, 1, True, _mlkem())
                                      .to_bytes()),
        "one_time_prekeys": [
            {"key_id": i, "key": b64(OneTimePreKeyPublic(i, _x25519()).to_bytes())}
            for i in range(1, ONE_TIME_BATCH + 1)],
        "one_time_kem_prekeys": [
            {"key_id": i, "key": b64(KemPreKeyPublic.create(ident, i, False, _mlkem())
                                     .to_bytes())}
            for i in range(1, ONE_TIME_BATCH + 1)],
    }


def registration(access_key: bytes | None = None) -> dict[str, Any]:
    """A registration body with a full prekey upload."""
    body: dict[str, Any] = {"identity_key": b64(identity().public.to_bytes()),
                            "registration_id": 7, **full_prekeys()}
    if access_key is not None:
        body["access_key"] = b64(access_key)
    return body


@functools.cache
def registration_bytes() -> bytes:
    """The same registration, encoded once (the storm sends it over and over)."""
    return json.dumps(registration()).encode()


def basic_auth(account_id: str, device_id: int, token: str) -> str:
    return "Basic " + b64(f"{account_id}.{device_id}:{token}".encode())


def random_access_key() -> bytes:
    return os.urandom(16)
