"""The server's signing keys and the short-lived sender certificates it issues.

Sealed sender (see ``veil.core.sealed``): a sender proves to the *recipient* who it is
with a certificate signed by the server, carried inside the encrypted envelope, so the
server never needs to know the sender of a sealed envelope. Two keys live in the data
directory (mode 0600, created on first start):

- the trust root (``trust_root.key``), whose public half clients pin at registration
  (``GET /v1/certificate/trust_root``);
- the server key with its certificate from the trust root (``server_signing.key``),
  which signs sender certificates.

The encodings are ``veil.core.sealed``'s; this module only keeps the keys on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from veil.core.errors import CoreError
from veil.core.keys import IdentityPublicKey
from veil.core.sealed import ServerKey, TrustRoot
from veil.server.errors import ConfigError, ValidationFailed

SERVER_KEY_ID = 1
SERVER_CERT_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000
ROOT_FILE = "trust_root.key"
SERVER_FILE = "server_signing.key"


@dataclass(frozen=True)
class SenderCertificate:
    encoded: bytes
    expires_ms: int


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_secret(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class CertificateAuthority:
    """Holds the keys of one deployment and signs sender certificates."""

    def __init__(self, data_dir: Path, now_ms: int) -> None:
        try:
            raw_root = _read_secret(data_dir / ROOT_FILE)
            if raw_root is None:
                root = TrustRoot.generate()
                _write_secret(data_dir / ROOT_FILE, root.to_bytes())
            else:
                root = TrustRoot.from_bytes(raw_root)
            raw_server = _read_secret(data_dir / SERVER_FILE)
            if raw_server is None:
                self._server = ServerKey.generate(root, SERVER_KEY_ID,
                                                  now_ms + SERVER_CERT_LIFETIME_MS)
                _write_secret(data_dir / SERVER_FILE, self._server.to_bytes())
            else:
                self._server = ServerKey.from_bytes(raw_server)
            self._server.certificate.validate(root.public, now_ms)
        except CoreError as exc:
            raise ConfigError(f"server keys in {data_dir} are unusable: {exc}") from None
        self.trust_root = root.public
        self.server_certificate = self._server.certificate.to_bytes()

    def issue(self, account_id: bytes, device_id: int, identity_key: bytes, now_ms: int,
              ttl_s: int) -> SenderCertificate:
        try:
            identity = IdentityPublicKey.from_bytes(identity_key)
        except CoreError:
            raise ValidationFailed("this device's identity key is not a Veil identity key")\
                from None
        expires = now_ms + ttl_s * 1000
        cert = self._server.issue(account_id, device_id, identity, expires)
        return SenderCertificate(cert.to_bytes(), expires)
