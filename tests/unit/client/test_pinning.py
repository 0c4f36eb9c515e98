"""The client's certificate pin (issue 13 §1; veil.client.pinning): parsed, kept with
the server URL (older stores have none), and a refused certificate is a typed error."""

from __future__ import annotations

import json
import ssl

import aiohttp
import pytest

from veil.client.errors import (
    CertificateMismatch,
    CertificateUntrusted,
    ClientError,
    ServerUnreachable,
)
from veil.client.pinning import certificate_error, parse_pin, pin_for, tls_check
from veil.client.records import SelfRecord

PIN = "0123456789abcdef" * 4


def test_pin_needs_https_and_is_normalised() -> None:
    assert pin_for("https://veil.example:8470", PIN.upper()) == PIN
    assert pin_for("http://127.0.0.1:8470", None) == pin_for("https://x", "") == ""
    with pytest.raises(ClientError, match="needs an https:// server URL"):
        pin_for("http://127.0.0.1:8470", PIN)
    with pytest.raises(ClientError, match="64 hex digits"):
        parse_pin("12:34")


def test_tls_check_is_a_fingerprint_or_ca_verification() -> None:
    check = tls_check(PIN)
    assert isinstance(check, aiohttp.Fingerprint) and check.fingerprint == bytes.fromhex(PIN)
    assert tls_check(None) is True and tls_check("") is True


def test_refused_certificates_are_typed_unreachable_errors() -> None:
    got = bytes(32)
    mismatch = certificate_error(
        aiohttp.ServerFingerprintMismatch(bytes.fromhex(PIN), got, "127.0.0.1", 1),
        "https://127.0.0.1:1")
    assert isinstance(mismatch, CertificateMismatch)
    assert isinstance(mismatch, ServerUnreachable)        # outbox keeps what waits
    assert mismatch.code == "certificate_mismatch" and PIN in str(mismatch)
    assert "\n" not in str(mismatch)
    verify = ssl.SSLCertVerificationError("self-signed certificate")
    verify.verify_message = "self-signed certificate"
    untrusted = certificate_error(
        aiohttp.ClientConnectorCertificateError(None, verify),  # type: ignore[arg-type]
        "https://127.0.0.1:1")
    assert isinstance(untrusted, CertificateUntrusted)
    assert "self-signed certificate" in str(untrusted) and "--pin" in str(untrusted)
    assert certificate_error(ConnectionResetError(), "https://127.0.0.1:1") is None


def test_self_record_keeps_the_pin_and_reads_older_records() -> None:
    me = SelfRecord("https://veil.example", "a" * 32, 1, b"t", None, b"p", 7, b"r", 0, PIN)
    assert SelfRecord.decode(me.encode()).tls_pin == PIN
    older = json.loads(me.encode())
    del older["tls_pin"]
    assert SelfRecord.decode(json.dumps(older).encode()).tls_pin == ""
