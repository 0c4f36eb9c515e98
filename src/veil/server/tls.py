"""TLS 1.3 on the server's listener (issue 13 §1, first bullet; docs/operations.md).

Two ways to give the server a certificate:

- ``tls_cert`` / ``tls_key`` (``veil server --tls-cert FILE --tls-key FILE``): PEM files
  the operator has, e.g. from Let's Encrypt; clients verify it against their CA store.
- ``tls_self_signed`` (``--tls self-signed``): an ECDSA P-256 certificate made on the
  first start and kept under ``DATA/tls/`` (the key mode 0600), valid for about a year
  and made anew once it has expired. Clients pin its SHA-256 fingerprint (``veil init
  --server https://… --pin SHA256``), which the server prints at every start.

The context accepts TLS 1.3 only: every client Veil ships speaks it, and it leaves no
cipher-suite choice to get wrong. Without TLS the server listens only on loopback
unless the operator sets ``insecure_public`` (:func:`check_listener`): plain HTTP to
the world would hand every account's token to anyone on the path.

Every problem with the files is a :class:`ConfigError` in one line (a missing file, a
file that is not PEM, a key that is not the certificate's).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.server.certificates import write_secret
from veil.server.config import ServerConfig
from veil.server.errors import ConfigError

log = logging.getLogger("veil.server.tls")

TLS_DIR = "tls"
CERT_FILE = "tls/cert.pem"
KEY_FILE = "tls/key.pem"
VALIDITY = datetime.timedelta(days=365)
# Back-dated a little: a client whose clock runs behind still accepts a new certificate.
BACKDATE = datetime.timedelta(hours=1)
# Names every self-signed certificate covers: what a client on the machine dials.
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - names of "every interface", not binds


@dataclass(frozen=True)
class ServerTls:
    """What the listener needs and what the operator is told."""

    context: ssl.SSLContext
    fingerprint: str            # of the DER certificate: what clients pin
    cert_path: Path
    not_after: datetime.datetime
    self_signed: bool
    generated: bool             # made (or made anew) by this start


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the DER certificate, lowercase hex without colons. ``cert`` may be a
    certificate, or its DER or PEM bytes."""
    if isinstance(cert, bytes):
        der = cert if not cert.lstrip().startswith(b"-----") else \
            x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    else:
        der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """A pinned fingerprint as :func:`fingerprint` writes it; also accepts the colon
    form (``AB:CD:…``, as ``openssl x509 -fingerprint -sha256`` prints) and upper case.
    Raises ConfigError for anything that is not 32 bytes of hex."""
    value = text.strip().replace(":", "").lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{text!r} is not a SHA-256 certificate fingerprint "
                          "(64 hex digits, colons allowed)")
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) reaches this machine only. A name other than
    ``localhost`` counts as public: it may resolve to anything."""
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback      # ::ffff:127.0.0.1 (3.11 says no)
    return address.is_loopback


def check_listener(config: ServerConfig) -> None:
    """Refuse plain HTTP outside loopback unless the operator insists (issue 13 §1)."""
    if config.tls_cert or config.tls_self_signed or config.insecure_public:
        return
    if not is_loopback(config.host):
        shown = config.host or "every interface"
        raise ConfigError(
            f"refusing to serve plain HTTP on {shown} (not a loopback address): give "
            "--tls-cert FILE --tls-key FILE or --tls self-signed, or --insecure-public "
            "behind a proxy that terminates TLS")


def plain_public(config: ServerConfig) -> bool:
    """Plain HTTP on a public address: allowed by ``insecure_public``, said loudly."""
    return not (config.tls_cert or config.tls_self_signed) and not is_loopback(config.host)


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The listener's TLS 1.3 context, or None when the configuration asks for no TLS."""
    tls = server_tls(config)
    return None if tls is None else tls.context


def server_tls(config: ServerConfig) -> ServerTls | None:
    """The certificate (made first with ``tls_self_signed`` if needed), checked, and its
    TLS 1.3 context; None without TLS."""
    if config.tls_cert:
        cert_path, key_path = Path(config.tls_cert), Path(config.tls_key)
        cert, generated = _load_cert(cert_path), False
    elif config.tls_self_signed:
        cert_path, key_path = config.data_dir / CERT_FILE, config.data_dir / KEY_FILE
        cert, generated = _self_signed(config, cert_path, key_path)
    else:
        return None
    _check_key(cert, key_path, cert_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:  # checked above; a race or an odd file
        raise ConfigError(f"cannot use the TLS certificate {cert_path} with the key "
                          f"{key_path}: {getattr(exc, 'reason', None) or exc}") from None
    return ServerTls(context, fingerprint(cert), cert_path, cert.not_valid_after_utc,
                     self_signed=not config.tls_cert, generated=generated)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS {what} {path}: "
                          f"{exc.strerror or exc}") from None


def _load_cert(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (the server's; a chain may follow)."""
    try:
        return x509.load_pem_x509_certificates(_read(path, "certificate"))[0]
    except ValueError:
        raise ConfigError(f"the TLS certificate {path} is not a PEM certificate") from None


# What OpenSSL can serve TLS 1.3 with (not DSA or X25519/X448, which cannot sign it).
_TLS_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
             ed448.Ed448PrivateKey)


def _load_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"the TLS key {path} is encrypted: give it without a "
                          "passphrase (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"the TLS key {path} is not a PEM private key") from None
    if not isinstance(key, _TLS_KEYS):
        raise ConfigError(f"the TLS key {path} is of a kind TLS cannot use")
    return key


def _check_key(cert: x509.Certificate, key_path: Path, cert_path: Path) -> None:
    """The key must be the certificate's: OpenSSL would say "key values mismatch"."""
    public = _load_key(key_path).public_key()
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ConfigError(f"the TLS key {key_path} does not belong to the certificate "
                          f"{cert_path}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _self_signed(config: ServerConfig, cert_path: Path,
                 key_path: Path) -> tuple[x509.Certificate, bool]:
    """The kept certificate, or a new one when there is none or it has expired. Called
    with the data directory's lock held, so no two processes make one at once."""
    if cert_path.exists() and key_path.exists():
        cert = _load_cert(cert_path)
        if cert.not_valid_after_utc > _now():
            return cert, False
        log.warning("the self-signed TLS certificate expired on %s: making a new one; "
                    "clients must pin its new fingerprint",
                    cert.not_valid_after_utc.date().isoformat())
    cert_pem, key_pem = make_self_signed(config.host)
    tls_dir = cert_path.parent
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls_dir.chmod(0o700)
    # The key first: a crash in between leaves a key without a certificate, made anew.
    write_secret(key_path, key_pem, replace=True)
    write_secret(cert_path, cert_pem, replace=True)
    cert_path.chmod(0o644)      # public: an operator may hand the file to clients
    return x509.load_pem_x509_certificate(cert_pem), True


def subject_names(host: str) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1, ::1 and the listen host when it is a name or an address
    (not a wildcard such as 0.0.0.0)."""
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in LOOPBACK_NAMES]
    addresses = [ipaddress.ip_address(a) for a in LOOPBACK_ADDRESSES]
    host = host.strip("[]")
    if host not in _WILDCARDS:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host.lower() not in LOOPBACK_NAMES:
                names.append(x509.DNSName(host.lower()))
        else:
            if address not in addresses:
                addresses.append(address)
    return names + [x509.IPAddress(a) for a in addresses]


def make_self_signed(host: str, now: datetime.datetime | None = None,
                     validity: datetime.timedelta = VALIDITY) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 self-signed server certificate and its key, both PEM."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Veil server (self-signed)")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(subject_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "TLS_DIR",
    "ServerTls",
    "check_listener",
    "fingerprint",
    "is_loopback",
    "make_self_signed",
    "parse_fingerprint",
    "plain_public",
    "server_context",
    "server_tls",
    "subject_names",
]
