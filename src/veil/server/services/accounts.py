"""Accounts, devices, device credentials, usernames, sealed-sender access and invites.

Accounts carry no phone number or e-mail: an account is 16 random bytes, an optional
unique username and one or more devices. Each device authenticates with its own random
32-byte token; the server keeps only SHA-256 of it (the token is high-entropy, so a slow
password hash adds nothing) and compares in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from veil.server.config import ServerConfig
from veil.server.encoding import ACCOUNT_ID_BYTES, log_id
from veil.server.errors import (
    AccountNotFound,
    InvalidInvite,
    ProofOfWorkRequired,
    RateLimited,
    RegistrationClosed,
    Unauthorized,
    UsernameNotFound,
)
from veil.server.services.keys import PreKeyUpload, validate_prekey_upload_off_loop
from veil.server.storage.base import AccountRecord, DeviceRecord, NewDevice, Storage

log = logging.getLogger("veil.server.accounts")
TOKEN_BYTES = 32
FIRST_DEVICE_ID = 1
_CACHE_SIZE = 50_000
# Registrations whose prekey signatures are checked at once, and waiting at most: half
# the CPUs this process may run on (a server pinned to one core checks one at a time).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
REGISTRATION_WORKERS = max(1, (_CPUS or 2) // 2)
MAX_WAITING_REGISTRATIONS = 64


def hash_token(token: bytes) -> bytes:
    return hashlib.sha256(b"veil device token\x00" + token).digest()


def hash_invite(token: str) -> bytes:
    return hashlib.sha256(b"veil invite\x00" + token.encode()).digest()


@dataclass(frozen=True)
class Registration:
    identity_key: bytes
    registration_id: int
    prekeys: PreKeyUpload
    token: bytes | None = None
    username: str | None = None
    access_key: bytes | None = None
    unrestricted_sealed: bool | None = None
    invite: str | None = None
    proof_of_work: tuple[str, str] | None = None  # (challenge, nonce): registration "pow"


class ProofChecker(Protocol):
    """What registration needs of the proof of work (protection/pow.py)."""

    def verify(self, challenge: str, nonce: str) -> None: ...

    def record_registration(self) -> None: ...


@dataclass(frozen=True)
class Registered:
    account_id: bytes
    device_id: int
    issued_token: bytes | None  # set when the server generated the token


class AccountService:
    def __init__(
        self, storage: Storage, config: ServerConfig, clock_ms: Callable[[], int]
    ) -> None:
        self._storage = storage
        self._config = config
        self._clock_ms = clock_ms
        # Verified credential hashes; bounded LRU so auth rarely touches the database.
        self._credentials: OrderedDict[tuple[bytes, int], DeviceRecord] = OrderedDict()
        # The signature checks of a registration's prekeys are its expensive part: a few
        # at a time, and a bounded queue beyond that, so a registration flood takes a
        # bounded share of the CPU and never the latency of everyone else (issue 13 §2).
        self._verifying = asyncio.Semaphore(REGISTRATION_WORKERS)
        self._waiting = 0

    async def register(self, reg: Registration,
                       proof: ProofChecker | None = None) -> Registered:
        """Create the account. ``proof``: the server's proof-of-work checker, which
        registration mode "pow" needs (a solution is checked, then spent)."""
        if self._config.registration == "pow":
            if proof is None or reg.proof_of_work is None:
                raise ProofOfWorkRequired(
                    "this server asks for a proof of work: solve GET /v1/accounts/challenge "
                    "and send it as proof_of_work",
                    {"challenge": "/v1/accounts/challenge"})
            # One hash: checked before everything else a stranger could make us do.
            proof.verify(*reg.proof_of_work)
        invite_hash = None
        if self._config.registration == "invite":
            if reg.invite is None:
                raise RegistrationClosed("this server registers accounts by invite only")
            invite_hash = hash_invite(reg.invite)
        elif reg.invite is not None:
            invite_hash = hash_invite(reg.invite)
        if invite_hash is not None and not await self._storage.invite_exists(
            invite_hash, self._clock_ms()
        ):
            # Checked (not consumed: create_account does that atomically) before the
            # signatures, so a stranger without an invite costs one SELECT, not
            # hundreds of signature checks.
            raise InvalidInvite("the invite token is unknown, used or expired")
        await self._validate(reg)
        token = reg.token if reg.token is not None else os.urandom(TOKEN_BYTES)
        account_id = os.urandom(ACCOUNT_ID_BYTES)
        unrestricted = (
            reg.unrestricted_sealed if reg.unrestricted_sealed is not None
            else self._config.unrestricted_sealed_default
        )
        device = NewDevice(
            device_id=FIRST_DEVICE_ID,
            registration_id=reg.registration_id,
            token_hash=hash_token(token),
            identity_key=reg.identity_key,
            signed_prekey=reg.prekeys.signed_prekey,
            last_resort_kem_prekey=reg.prekeys.last_resort_kem_prekey,
            one_time_prekeys=reg.prekeys.one_time_prekeys,
            one_time_kem_prekeys=reg.prekeys.one_time_kem_prekeys,
        )
        await self._storage.create_account(
            account_id, username=reg.username, access_key=reg.access_key,
            unrestricted_sealed=unrestricted, device=device, now_ms=self._clock_ms(),
            invite_hash=invite_hash, max_prekeys_stored=self._config.max_prekeys_stored,
        )
        log.info("registered account %s", log_id(account_id))
        if proof is not None:
            proof.record_registration()
        return Registered(account_id, FIRST_DEVICE_ID, None if reg.token else token)

    async def _validate(self, reg: Registration) -> None:
        if self._waiting >= MAX_WAITING_REGISTRATIONS:
            raise RateLimited.after(1.0, "register")
        self._waiting += 1
        try:
            async with self._verifying:
                await validate_prekey_upload_off_loop(
                    reg.prekeys, identity_key=reg.identity_key, config=self._config)
        finally:
            self._waiting -= 1

    async def authenticate(
        self, account_id: bytes, device_id: int, token: bytes, *, cache: bool = True
    ) -> DeviceRecord:
        """The device record if ``token`` is this device's credential, else Unauthorized.

        ``cache=False`` for long-lived connections: they authenticate once, and caching
        their records would only add to the memory each idle connection costs.
        """
        key = (account_id, device_id)
        offered = hash_token(token)
        record = self._credentials.get(key)
        if record is None:
            record = await self._storage.get_device(account_id, device_id)
            if record is None:
                # Same error as a wrong token: do not reveal which accounts exist.
                raise Unauthorized("invalid credentials")
        if not hmac.compare_digest(record.token_hash, offered):
            raise Unauthorized("invalid credentials")
        if not cache:
            return record
        self._credentials[key] = record
        self._credentials.move_to_end(key)
        if len(self._credentials) > _CACHE_SIZE:
            self._credentials.popitem(last=False)
        return record

    def forget(self, account_id: bytes, device_id: int) -> None:
        """Drop a cached credential (a removed device's token must stop working at once)."""
        self._credentials.pop((account_id, device_id), None)

    async def account(self, account_id: bytes) -> AccountRecord:
        record = await self._storage.get_account(account_id)
        if record is None:
            raise AccountNotFound("no such account")
        return record

    async def lookup_username(self, username: str) -> bytes:
        account_id = await self._storage.find_username(username)
        if account_id is None:
            raise UsernameNotFound("no account has that username")
        return account_id

    async def set_username(self, account_id: bytes, username: str | None) -> None:
        await self._storage.set_username(account_id, username)

    async def set_sealed_access(
        self, account_id: bytes, access_key: bytes | None, unrestricted: bool
    ) -> None:
        await self._storage.set_sealed_access(account_id, access_key, unrestricted)

    async def mint_invite(self, ttl_s: int) -> str:
        """A new single-use invite token (only its hash is stored)."""
        if ttl_s <= 0:
            raise InvalidInvite("an invite must be valid for a positive time")
        token = os.urandom(18).hex()
        await self._storage.add_invite(hash_invite(token), self._clock_ms() + ttl_s * 1000)
        return token

    @staticmethod
    def describe(account_id: bytes) -> str:
        return log_id(account_id)

__all__ = [
    "AccountService",
    "Registration",
]
