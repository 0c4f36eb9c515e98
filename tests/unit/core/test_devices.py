"""Device approvals and the provisioning code and cipher (veil.core.devices, provisioning)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from veil.core import devices, provisioning
from veil.core.errors import DecryptionFailed, MalformedMessage, UnsupportedVersion
from veil.core.keys import IdentityKeyPair

ACCOUNT = bytes(range(16))


def _identity(seed: int) -> IdentityKeyPair:
    """A deterministic identity (known-answer tests need fixed keys)."""
    signing = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    dh = x25519.X25519PrivateKey.from_private_bytes(bytes([seed + 1]) * 32)
    return IdentityKeyPair.from_bytes(b"\x01" + signing.private_bytes_raw()
                                      + dh.private_bytes_raw())


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


def test_approval_known_answer() -> None:
    """Ed25519 is deterministic: the encoding and signature of fixed inputs are fixed."""
    approval = devices.DeviceApproval.sign(_identity(7), ACCOUNT, 2, 12345, 1_700_000_000_000)
    raw = approval.to_bytes()
    assert len(raw) == devices.APPROVAL_SIZE == 97
    assert raw[:1 + 16 + 4 + 4 + 8].hex() == (
        "01" + ACCOUNT.hex() + "00000002" + "00003039" + "0000018bcfe56800")
    assert hashlib.sha256(raw).hexdigest() == KNOWN_APPROVAL_SHA256
    assert devices.DeviceApproval.from_bytes(raw) == approval


KNOWN_APPROVAL_SHA256 = "37bec65fac1f8a344d02d984bf7ae6cc24f4c4e2464c9c8f69d6eb7309ea2733"


def test_approval_verifies_and_refuses_tampering() -> None:
    me = _identity(7)
    approval = devices.DeviceApproval.sign(me, ACCOUNT, 3, 99, 5)
    approval.verify(me.public, ACCOUNT, 3, 99)
    raw = approval.to_bytes()
    assert devices.check_device(me.public, ACCOUNT, 3, 99, raw) == approval
    for wrong in ((bytes(16), 3, 99), (ACCOUNT, 4, 99), (ACCOUNT, 3, 98)):
        with pytest.raises(devices.UnapprovedDevice):
            approval.verify(me.public, *wrong)
    with pytest.raises(devices.UnapprovedDevice):
        approval.verify(_identity(9).public, ACCOUNT, 3, 99)
    for index in (30, 96):           # the approval time, the signature
        tampered = devices.DeviceApproval.from_bytes(_flip(raw, index))
        with pytest.raises(devices.UnapprovedDevice):
            tampered.verify(me.public, ACCOUNT, 3, 99)
    with pytest.raises(UnsupportedVersion):
        devices.DeviceApproval.from_bytes(b"\x02" + raw[1:])
    with pytest.raises(MalformedMessage):
        devices.DeviceApproval.from_bytes(raw[:-1])
    with pytest.raises(MalformedMessage):
        devices.DeviceApproval.from_bytes(raw + b"\x00")


def test_missing_approval_tolerated_for_device_one_only() -> None:
    me = _identity(7)
    assert devices.check_device(me.public, ACCOUNT, 1, 5, None) is None
    with pytest.raises(devices.UnapprovedDevice, match="no approval"):
        devices.check_device(me.public, ACCOUNT, 2, 5, None)
    # An approval for device 1 must still verify when it is there.
    other = devices.DeviceApproval.sign(_identity(9), ACCOUNT, 1, 5, 0).to_bytes()
    with pytest.raises(devices.UnapprovedDevice):
        devices.check_device(me.public, ACCOUNT, 1, 5, other)


SECRET = bytes(range(100, 116))


def _x25519(seed: int) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _code(public: bytes, secret: bytes = SECRET) -> provisioning.LinkCode:
    return provisioning.LinkCode.create(bytes(range(10)), secret, public)


def test_link_code_round_trip_and_check() -> None:
    channel = bytes(range(10))
    public = _x25519(5).public_key().public_bytes_raw()
    code = _code(public)
    text = code.text()
    assert len(text) == 59 and text.count("-") == 11
    assert provisioning.LinkCode.parse(text).secret == SECRET
    assert code.check_value == hashlib.sha256(
        b"veil link check v2" + channel + SECRET + public).digest()[:4]
    for spelled in (text, text.lower(), text.replace("-", " "), code.qr_payload()):
        assert provisioning.LinkCode.parse(spelled) == code
    code.check(public)
    with pytest.raises(provisioning.LinkCodeMismatch):
        code.check(_x25519(6).public_key().public_bytes_raw())
    typo = provisioning.LinkCode(channel, _flip(SECRET, 3), code.check_value)
    with pytest.raises(provisioning.LinkCodeMismatch):       # a typo in the secret
        typo.check(public)
    with pytest.raises(provisioning.BadLinkCode):
        provisioning.LinkCode.parse("ABCD-EFGH")
    with pytest.raises(provisioning.BadLinkCode):
        provisioning.LinkCode.parse("1" * 48)
    with pytest.raises(provisioning.BadLinkCode):
        provisioning.LinkCode.create(channel, bytes(10), public)


def test_provisioning_cipher_round_trip_and_binding() -> None:
    new, sender = _x25519(0x11), _x25519(0x22)
    new_pub = new.public_key().public_bytes_raw()
    code = _code(new_pub)
    sealed = provisioning.seal(b"the identity and more", code, new_pub, sender)
    assert sealed[0] == 2
    assert hashlib.sha256(sealed).hexdigest() == KNOWN_SEALED_SHA256
    assert provisioning.open_sealed(sealed, code, new) == b"the identity and more"
    with pytest.raises(DecryptionFailed):
        provisioning.open_sealed(_flip(sealed, 40), code, new)
    with pytest.raises(DecryptionFailed):              # another sender key
        provisioning.open_sealed(sealed[:1] + _x25519(0x33).public_key().public_bytes_raw()
                                 + sealed[33:], code, new)
    with pytest.raises(DecryptionFailed):              # for another recipient
        provisioning.open_sealed(sealed, code, _x25519(0x44))
    other_channel = provisioning.LinkCode(bytes(10), SECRET, code.check_value)
    with pytest.raises(DecryptionFailed):              # for another channel
        provisioning.open_sealed(sealed, other_channel, new)
    with pytest.raises(UnsupportedVersion):
        provisioning.open_sealed(b"\x01" + sealed[1:], code, new)
    with pytest.raises(MalformedMessage):
        provisioning.open_sealed(sealed[:20], code, new)


def test_a_payload_sealed_without_the_secret_is_refused() -> None:
    """The server stores E, so it can seal to E; without the code's secret the new
    device cannot open it (review finding: server MITM of the new device)."""
    new = _x25519(0x11)
    new_pub = new.public_key().public_bytes_raw()
    code = _code(new_pub)
    # The server knows the channel id and E, and guesses a secret (here: all zeros).
    forged_code = provisioning.LinkCode.create(code.channel_id, bytes(16), new_pub)
    forged = provisioning.seal(b"the server's identity", forged_code, new_pub, _x25519(0x55))
    with pytest.raises(DecryptionFailed):
        provisioning.open_sealed(forged, code, new)


KNOWN_SEALED_SHA256 = "3030c34a75987669083578f911bbd5eba8abfbf28f577bc645cc5762635794b7"


def test_sessions_between_own_devices_need_the_own_device_flag() -> None:
    from veil.core import prekeys, session
    from veil.core.errors import UntrustedIdentity

    me = _identity(7)
    other_device = prekeys.PreKeys.generate(me, one_time=1, now_ms=0)
    with pytest.raises(UntrustedIdentity):
        session.initiate(me, other_device.bundle(), b"sync")
    _, initial = session.initiate(me, other_device.bundle(), b"sync", own_device=True)
    _, plaintext = session.respond(me, other_device, initial)
    assert plaintext == b"sync"
