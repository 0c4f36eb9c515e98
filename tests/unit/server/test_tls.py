"""TLS on the listener (issue 13 §1; veil.server.tls): the self-signed certificate is
made once and kept, its fingerprint is what a client sees in the handshake, TLS 1.2 is
refused, and every bad file is one clear ConfigError."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from veil.client.errors import ClientError
from veil.client.pinning import parse_pin
from veil.server.config import ServerConfig
from veil.server.errors import ConfigError
from veil.server.tls import (
    CERT_FILE,
    KEY_FILE,
    check_listener,
    fingerprint,
    is_loopback,
    make_self_signed,
    parse_fingerprint,
    plain_public,
    server_context,
    server_tls,
    subject_names,
)


def self_signed(tmp_path: Path, host: str = "127.0.0.1") -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", host=host, tls_self_signed=True)


def test_no_tls_asked_no_context(tmp_path: Path) -> None:
    assert server_context(ServerConfig(data_dir=tmp_path)) is None
    assert not (tmp_path / CERT_FILE).exists()


def test_self_signed_is_made_once_and_kept(tmp_path: Path) -> None:
    config = self_signed(tmp_path)
    first = server_tls(config)
    assert first is not None and first.generated and first.self_signed
    cert_path, key_path = config.data_dir / CERT_FILE, config.data_dir / KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
    key_bytes = key_path.read_bytes()
    # A restart: the same certificate and key, so pinned clients keep working.
    again = server_tls(config)
    assert again is not None and not again.generated
    assert again.fingerprint == first.fingerprint
    assert key_path.read_bytes() == key_bytes


def test_self_signed_certificate_fields(tmp_path: Path) -> None:
    tls = server_tls(self_signed(tmp_path, host="veil.example.org"))
    assert tls is not None
    cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
    key = cert.public_key()
    from cryptography.hazmat.primitives.asymmetric import ec
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "veil.example.org"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=364) < lifetime < datetime.timedelta(days=367)


def test_subject_names_take_the_listen_address_but_not_wildcards() -> None:
    def ips(host: str) -> set[str]:
        return {str(n.value) for n in subject_names(host) if isinstance(n, x509.IPAddress)}

    assert ips("192.0.2.7") == {"127.0.0.1", "::1", "192.0.2.7"}
    assert ips("[2001:db8::1]") == {"127.0.0.1", "::1", "2001:db8::1"}
    assert ips("0.0.0.0") == ips("::") == ips("localhost") == {"127.0.0.1", "::1"}


def test_expired_self_signed_is_made_anew(tmp_path: Path) -> None:
    config = self_signed(tmp_path)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    cert_pem, key_pem = make_self_signed("127.0.0.1", now=long_ago)
    (config.data_dir / "tls").mkdir(parents=True)
    (config.data_dir / CERT_FILE).write_bytes(cert_pem)
    (config.data_dir / KEY_FILE).write_bytes(key_pem)
    tls = server_tls(config)
    assert tls is not None and tls.generated
    assert tls.fingerprint != fingerprint(cert_pem)
    assert tls.not_after > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)


def test_missing_certificate_of_a_pair_is_made_anew(tmp_path: Path) -> None:
    config = self_signed(tmp_path)
    first = server_tls(config)
    assert first is not None
    (config.data_dir / CERT_FILE).unlink()
    second = server_tls(config)
    assert second is not None and second.generated
    assert second.fingerprint != first.fingerprint


def test_fingerprint_forms_agree(tmp_path: Path) -> None:
    cert_pem, _ = make_self_signed("localhost")
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert fingerprint(cert) == fingerprint(cert_pem) == fingerprint(der) == expected
    assert len(expected) == 64 and expected == expected.lower()
    colons = ":".join(expected[i:i + 2] for i in range(0, 64, 2)).upper()
    assert parse_fingerprint(colons) == parse_pin(colons) == expected
    assert parse_fingerprint(expected) == parse_pin(f"  {expected}\n") == expected
    for bad in ("", "abc", expected[:-1], expected + "00", "zz" * 32):
        with pytest.raises(ConfigError):
            parse_fingerprint(bad)
        with pytest.raises(ClientError):
            parse_pin(bad)


async def _handshake(context: ssl.SSLContext,
                     client: ssl.SSLContext) -> tuple[bytes, str | None]:
    """One TLS connection to a loopback listener with ``context``: the certificate the
    client saw (DER) and the version agreed."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client), 10)
        sslobj = writer.get_extra_info("ssl_object")
        der, version = sslobj.getpeercert(binary_form=True), sslobj.version()
        writer.close()
        return der, version
    finally:
        server.close()
        await server.wait_closed()


def _client(max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE       # the test pins by comparing the DER
    if max_version is not None:
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.maximum_version = max_version
    return client


async def test_handshake_presents_the_fingerprinted_certificate(tmp_path: Path) -> None:
    tls = server_tls(self_signed(tmp_path))
    assert tls is not None
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_3
    der, version = await _handshake(tls.context, _client())
    assert version == "TLSv1.3"
    assert hashlib.sha256(der).hexdigest() == tls.fingerprint


async def test_tls_1_2_is_refused(tmp_path: Path) -> None:
    config = self_signed(tmp_path)
    context = server_context(config)
    assert context is not None
    # The control: the same certificate on a context that allows TLS 1.2 talks to it.
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.load_cert_chain(config.data_dir / CERT_FILE, config.data_dir / KEY_FILE)
    _, version = await _handshake(lenient, _client(max_version=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(context, _client(max_version=ssl.TLSVersion.TLSv1_2))


def _pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert_pem, key_pem = make_self_signed("localhost")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


def _files(tmp_path: Path, cert: Path, key: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", tls_cert=str(cert), tls_key=str(key))


def test_operator_files_are_used(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "a")
    tls = server_tls(_files(tmp_path, cert, key))
    assert tls is not None and not tls.self_signed and not tls.generated
    assert tls.fingerprint == fingerprint(cert.read_bytes())
    assert not (tmp_path / "data" / CERT_FILE).exists()


def test_key_of_another_certificate_is_one_clear_error(tmp_path: Path) -> None:
    cert_a, _ = _pair(tmp_path, "a")
    _, key_b = _pair(tmp_path, "b")
    with pytest.raises(ConfigError, match="does not belong to the certificate") as info:
        server_tls(_files(tmp_path, cert_a, key_b))
    assert "\n" not in str(info.value)


def test_missing_and_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "a")
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"cannot read the TLS certificate .*nope\.pem"):
        server_tls(_files(tmp_path, missing, key))
    with pytest.raises(ConfigError, match=r"cannot read the TLS key .*nope\.pem"):
        server_tls(_files(tmp_path, cert, missing))
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        server_tls(_files(tmp_path, junk, key))
    with pytest.raises(ConfigError, match="is not a PEM private key"):
        server_tls(_files(tmp_path, cert, junk))
    # The certificate given as the key (a common slip) is not a key either.
    with pytest.raises(ConfigError, match="is not a PEM private key"):
        server_tls(_files(tmp_path, cert, cert))


def test_encrypted_key_is_refused_clearly(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "a")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="is encrypted"):
        server_tls(_files(tmp_path, cert, key))


def test_damaged_kept_certificate_is_an_error_not_a_silent_new_pin(tmp_path: Path) -> None:
    config = self_signed(tmp_path)
    server_tls(config)
    (config.data_dir / CERT_FILE).write_text("damaged")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        server_tls(config)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_may_serve_plain_http(host: str) -> None:
    config = ServerConfig(host=host)
    assert is_loopback(host)
    check_listener(config)
    assert not plain_public(config)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.7", "veil.example.org"])
def test_public_hosts_need_tls_or_insecure_public(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refusing to serve plain HTTP") as info:
        check_listener(ServerConfig(host=host))
    assert "\n" not in str(info.value) and "--insecure-public" in str(info.value)
    check_listener(ServerConfig(host=host, tls_self_signed=True))
    allowed = ServerConfig(host=host, insecure_public=True)
    check_listener(allowed)
    assert plain_public(allowed)
