"""Business rules of the services, on a real SQLite storage and the in-process bus."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veil.core.keys import (
    IdentityKeyPair,
    KemPreKeyPublic,
    OneTimePreKeyPublic,
    SignedPreKeyPublic,
)
from veil.core.sealed import SenderCertificate
from veil.server.bus import EnvelopeQueued, Event, InProcessBus, KeysLow
from veil.server.certificates import (
    ROOT_FILE,
    ROOT_PUBLIC_FILE,
    SERVER_FILE,
    STATEMENT_FILE,
    CertificateAuthority,
)
from veil.server.config import ServerConfig
from veil.server.errors import (
    DuplicatePreKey,
    InvalidAccessKey,
    InvalidInvite,
    MismatchedDevices,
    PayloadTooLarge,
    QueueFull,
    RegistrationClosed,
    Unauthorized,
    ValidationFailed,
)
from veil.server.services import keys as keys_module
from veil.server.services.accounts import AccountService, Registration
from veil.server.services.keys import KeyService, PreKeyUpload, validate_prekey_upload
from veil.server.services.messages import DeviceSender, MessageService, Outgoing, SealedSender
from veil.server.storage.base import OneTimeKey
from veil.server.storage.sqlite import SQLiteStorage

NOW = 1_700_000_000_000
# Every account of these tests has this identity, so prekeys signed by it verify.
IDENTITY = IdentityKeyPair.generate()


def spk(key_id: int = 1, identity: IdentityKeyPair = IDENTITY) -> bytes:
    public = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return SignedPreKeyPublic.create(identity, key_id, public).to_bytes()


def kem(key_id: int = 1, *, last_resort: bool = False) -> bytes:
    public = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    return KemPreKeyPublic.create(IDENTITY, key_id, last_resort, public).to_bytes()


def opk(key_id: int) -> bytes:
    public = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return OneTimePreKeyPublic(key_id, public).to_bytes()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.was_replaced = False

    def deliver(self, event: Event) -> None:
        self.events.append(event)

    def replaced(self) -> None:
        self.was_replaced = True


class World:
    def __init__(self, storage: SQLiteStorage, config: ServerConfig) -> None:
        self.bus = InProcessBus()
        self.config = config
        self.accounts = AccountService(storage, config, lambda: NOW)
        self.keys = KeyService(storage, self.bus, config)
        self.messages = MessageService(storage, self.bus, config, lambda: NOW)

    async def register(self, **kw: Any) -> tuple[bytes, bytes]:
        reg = Registration(identity_key=IDENTITY.public.to_bytes(),
                           registration_id=1,
                           prekeys=kw.pop("prekeys", PreKeyUpload()), **kw)
        result = await self.accounts.register(reg)
        assert result.issued_token is not None
        return result.account_id, result.issued_token


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    yield World(storage, ServerConfig(data_dir=tmp_path, max_queue_per_device=3))
    await storage.close()


def env(dev: int, body: bytes = b"x") -> Outgoing:
    return Outgoing(dev, body)


async def test_authentication(world: World):
    account, token = await world.register()
    record = await world.accounts.authenticate(account, 1, token)
    assert record.device_id == 1
    for acc, dev, tok in ((account, 1, os.urandom(32)), (account, 2, token),
                          (os.urandom(16), 1, token)):
        with pytest.raises(Unauthorized):
            await world.accounts.authenticate(acc, dev, tok)


async def test_sealed_submission_rules(world: World):
    key = os.urandom(16)
    bob, _ = await world.register(access_key=key)
    with pytest.raises(InvalidAccessKey):
        await world.messages.submit(bob, [env(1)], SealedSender(None))
    with pytest.raises(InvalidAccessKey):
        await world.messages.submit(bob, [env(1)], SealedSender(os.urandom(16)))
    accepted = await world.messages.submit(bob, [env(1)], SealedSender(key))
    assert accepted[0].device_id == 1 and accepted[0].ts == NOW
    with pytest.raises(MismatchedDevices) as info:
        await world.messages.submit(bob, [env(1), env(2)], SealedSender(key))
    assert info.value.details == {"missing_devices": [], "extra_devices": [2]}
    with pytest.raises(ValidationFailed):
        await world.messages.submit(bob, [env(1), env(1)], SealedSender(key))
    await world.accounts.set_sealed_access(bob, None, True)
    await world.messages.submit(bob, [env(1)], SealedSender(None))


async def test_queue_is_bounded(world: World):
    bob, _ = await world.register(unrestricted_sealed=True)
    for _ in range(3):
        await world.messages.submit(bob, [env(1)], SealedSender(None))
    with pytest.raises(QueueFull):
        await world.messages.submit(bob, [env(1)], SealedSender(None))
    [first] = await world.messages.pending(bob, 1, 1)
    assert await world.messages.acknowledge(bob, 1, [first.id]) == 1
    await world.messages.submit(bob, [env(1)], SealedSender(None))


async def test_push_after_commit_and_own_account(world: World):
    alice, _ = await world.register()
    sink = Recorder()
    await world.bus.subscribe((alice, 1), sink)
    bob, _ = await world.register()
    accepted = await world.messages.submit(alice, [env(1, b"hi")], DeviceSender(bob, 1))
    # A typed event: what the device hears on the wire is the WebSocket layer's business.
    assert sink.events == [EnvelopeQueued(accepted[0].id, NOW, b"hi")]
    # To one's own account: the sending device is not a recipient.
    with pytest.raises(MismatchedDevices):
        await world.messages.submit(alice, [env(1)], DeviceSender(alice, 1))
    newer = Recorder()
    await world.bus.subscribe((alice, 1), newer)
    assert sink.was_replaced and world.bus.connected() == 2 - 1
    await world.bus.unsubscribe((alice, 1), sink)  # stale: no effect
    assert world.bus.connected() == 1


async def test_keys_low_notice_and_fallback(world: World):
    upload = PreKeyUpload(
        signed_prekey=spk(), last_resort_kem_prekey=kem(last_resort=True),
        one_time_prekeys=[OneTimeKey(i, opk(i)) for i in range(11)],
        one_time_kem_prekeys=[OneTimeKey(i, kem(i)) for i in range(11)],
    )
    bob, _ = await world.register(prekeys=upload)
    sink = Recorder()
    await world.bus.subscribe((bob, 1), sink)
    status = await world.keys.status(bob, 1)
    assert not status.low and status.counts.one_time_prekeys == 11
    await world.keys.fetch(bob, 1, authenticated=True, access_key=None)
    assert sink.events == []
    await world.keys.fetch(bob, None, authenticated=True, access_key=None)
    assert sink.events == [KeysLow(one_time_prekeys=9, one_time_kem_prekeys=9)]
    with pytest.raises(InvalidAccessKey):
        await world.keys.fetch(bob, 1, authenticated=False, access_key=None)


def test_validate_prekey_upload_checks_structure():
    config = ServerConfig(max_prekeys_per_upload=3)
    ok = IDENTITY.public.to_bytes()
    validate_prekey_upload(PreKeyUpload(signed_prekey=spk()), identity_key=ok, config=config)
    bad = [
        (PreKeyUpload(), b"short", ValidationFailed),
        (PreKeyUpload(signed_prekey=b"s" * 5000), ok, PayloadTooLarge),
        (PreKeyUpload(last_resort_kem_prekey=b"k" * 100), ok, ValidationFailed),
        (PreKeyUpload(one_time_prekeys=[OneTimeKey(1, b"a" * 32)] * 2), ok, DuplicatePreKey),
        (PreKeyUpload(one_time_prekeys=[OneTimeKey(i, b"a" * 32) for i in range(4)]), ok,
         PayloadTooLarge),
        (PreKeyUpload(one_time_prekeys=[OneTimeKey(-1, b"a" * 32)]), ok, ValidationFailed),
    ]
    for upload, identity, error in bad:
        with pytest.raises(error):
            validate_prekey_upload(upload, identity_key=identity, config=config)


def test_validate_prekey_upload_checks_signatures():
    config = ServerConfig()
    ok = IDENTITY.public.to_bytes()
    good = PreKeyUpload(
        signed_prekey=spk(), last_resort_kem_prekey=kem(9, last_resort=True),
        one_time_prekeys=[OneTimeKey(i, opk(i)) for i in range(1, 4)],
        one_time_kem_prekeys=[OneTimeKey(i, kem(i)) for i in range(1, 5)],
    )
    validate_prekey_upload(good, identity_key=ok, config=config)
    tampered = bytearray(good.one_time_kem_prekeys[3].key)
    tampered[-10] ^= 0x40  # inside the signature, the record's last 64 bytes
    others = IdentityKeyPair.generate()
    not_bound = bytearray(ok)
    not_bound[-1] ^= 1  # the Ed25519 binding of the X25519 key no longer verifies
    bad = [
        (PreKeyUpload(signed_prekey=spk(identity=others)), ok,
         "signed_prekey: signature does not verify"),
        (replace(good, one_time_kem_prekeys=[*good.one_time_kem_prekeys[:3],
                                              OneTimeKey(4, bytes(tampered))]), ok,
         "one_time_kem_prekeys[3]: signature does not verify"),
        (PreKeyUpload(last_resort_kem_prekey=kem(9)), ok,
         "last_resort_kem_prekey: a one-time ML-KEM prekey, not a last-resort one"),
        (PreKeyUpload(one_time_kem_prekeys=[OneTimeKey(1, kem(1, last_resort=True))]), ok,
         "one_time_kem_prekeys[0]: a last-resort ML-KEM prekey, not a one-time one"),
        (PreKeyUpload(one_time_prekeys=[OneTimeKey(1, opk(1)), OneTimeKey(2, opk(7))]), ok,
         "one_time_prekeys[1]: embedded key_id 7 differs from key_id 2"),
        (PreKeyUpload(one_time_kem_prekeys=[OneTimeKey(5, kem(6))]), ok,
         "one_time_kem_prekeys[0]: embedded key_id 6 differs from key_id 5"),
        (PreKeyUpload(one_time_prekeys=[OneTimeKey(1, b"a" * 37)]), ok,
         "one_time_prekeys[0]: unknown version"),
        (good, bytes(not_bound), "identity_key: signature does not verify"),
        (good, b"i" * 33, "identity_key: unknown version"),
        (good, b"\x01" + b"i" * 32, "identity_key: truncated"),
    ]
    for upload, identity, message in bad:
        with pytest.raises(ValidationFailed) as info:
            validate_prekey_upload(upload, identity_key=identity, config=config)
        assert info.value.message == message


async def test_invite_mode(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        world = World(storage, ServerConfig(data_dir=tmp_path, registration="invite"))
        with pytest.raises(RegistrationClosed):
            await world.register()
        invite = await world.accounts.mint_invite(3600)
        await world.register(invite=invite)
        with pytest.raises(InvalidInvite):
            await world.register(invite=invite)
    finally:
        await storage.close()


async def test_invite_is_checked_before_the_signatures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A stranger without a valid invite costs one lookup, not the signature checks."""
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        world = World(storage, ServerConfig(data_dir=tmp_path, registration="invite"))
        verified: list[object] = []
        real = keys_module.validate_prekey_upload

        def counting(*args: Any, **kw: Any) -> None:
            verified.append(args)
            real(*args, **kw)

        monkeypatch.setattr(keys_module, "validate_prekey_upload", counting)
        badly_signed = PreKeyUpload(signed_prekey=spk(identity=IdentityKeyPair.generate()))
        with pytest.raises(InvalidInvite):
            await world.register(invite="bogus", prekeys=badly_signed)
        assert verified == []
        invite = await world.accounts.mint_invite(3600)
        with pytest.raises(ValidationFailed):  # a valid invite: now the keys are judged
            await world.register(invite=invite, prekeys=badly_signed)
        assert len(verified) == 1
        await world.register(invite=invite)  # and the invite was not consumed by that
        assert len(verified) == 2
    finally:
        await storage.close()


def test_certificate_authority_keys(tmp_path: Path):
    ca = CertificateAuthority(tmp_path, NOW)
    assert ca.generated_root
    for name in (ROOT_PUBLIC_FILE, SERVER_FILE, STATEMENT_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert not (tmp_path / ROOT_FILE).exists()      # the root's private key is not kept
    again = CertificateAuthority(tmp_path, NOW)
    assert not again.generated_root
    assert again.trust_root == ca.trust_root
    assert again.server_certificate == ca.server_certificate
    identity = IdentityKeyPair.generate().public
    cert = ca.issue(b"a" * 16, 3, identity.to_bytes(), NOW, 60)
    assert cert.expires_ms == NOW + 60_000
    decoded = SenderCertificate.from_bytes(cert.encoded)
    decoded.validate(ca.trust_root, NOW)
    assert (decoded.account_id, decoded.device_id, decoded.identity) == (b"a" * 16, 3, identity)
    with pytest.raises(ValidationFailed):
        ca.issue(b"a" * 16, 3, os.urandom(129), NOW, 60)


async def test_unrestricted_sealed_default_applies_to_new_accounts(tmp_path: Path):
    storage = SQLiteStorage(tmp_path / "db.sqlite3")
    await storage.open()
    try:
        world = World(storage, ServerConfig(data_dir=tmp_path, unrestricted_sealed_default=True))
        open_account, _ = await world.register()
        await world.messages.submit(open_account, [env(1)], SealedSender(None))
        closed_account, _ = await world.register(unrestricted_sealed=False)
        with pytest.raises(InvalidAccessKey):
            await world.messages.submit(closed_account, [env(1)], SealedSender(None))
    finally:
        await storage.close()
