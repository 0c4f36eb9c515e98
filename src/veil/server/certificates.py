"""The server's signing key, the trust root it chains to, and the sender certificates.

Sealed sender (see ``veil.core.sealed``): a sender proves to the *recipient* who it is
with a certificate signed by the server, carried inside the encrypted envelope, so the
server never needs to know the sender of a sealed envelope.

The trust root's private key does not live in the data directory (outside review,
issue 8 item 6): whoever holds it can certify server keys every client accepts, so it
must not be stolen with the server. The data directory holds (mode 0600)

- ``server_signing.key``: the server key with its certificate from the root;
- ``trust_root.pub``: the root's public key (clients pin its fingerprint);
- ``server_keys.statement``: the root-signed *key statement*, "server keys below id N
  are no longer valid", which clients keep (the highest N) and enforce.

``veil server keys init-root`` makes a root elsewhere (``--out``), ``veil server keys
certify`` makes and certifies a fresh server key into a data directory (optionally
revoking the older ones), ``veil server keys move-root`` takes the root out of a data
directory written by earlier versions; the server refuses to start while
``trust_root.key`` is in its data directory. On a first start with an empty data
directory (``make run``, tests, demos) the server makes a throw-away root, certifies
its key, writes the three files above and keeps no copy of the root's private key:
such a deployment works at once, but its server key can never be rotated or revoked.

The key statement and the root's fingerprint are ``veil.core.sealed``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from veil.core.errors import CoreError
from veil.core.keys import IdentityPublicKey
from veil.core.sealed import KeyStatement, ServerKey, TrustRoot
from veil.core.sealed import trust_root_fingerprint as fingerprint
from veil.server.errors import ConfigError, ValidationFailed

SERVER_KEY_ID = 1
DAY_MS = 24 * 3600 * 1000
SERVER_CERT_LIFETIME_MS = 10 * 365 * DAY_MS      # of a throw-away setup's only key
ROOT_FILE = "trust_root.key"                    # refused in the data directory
ROOT_PUBLIC_FILE = "trust_root.pub"
SERVER_FILE = "server_signing.key"
STATEMENT_FILE = "server_keys.statement"


@dataclass(frozen=True)
class SenderCertificate:
    encoded: bytes
    expires_ms: int


def write_secret(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Mode 0600, fsynced; with ``replace`` an existing file is swapped atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".new") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if replace:
        os.replace(target, path)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def refuse_root_in(data_dir: Path) -> None:
    if (data_dir / ROOT_FILE).exists():
        raise ConfigError(
            f"{data_dir / ROOT_FILE} is the trust root's private key and must not live in "
            f"the data directory; move it out with 'veil server keys move-root --data "
            f"{data_dir} --out FILE'")


def install(data_dir: Path, root: TrustRoot, server_key: ServerKey,
            statement: KeyStatement) -> None:
    """Write the server key, the root's public key and the statement (not the root)."""
    write_secret(data_dir / SERVER_FILE, server_key.to_bytes(), replace=True)
    write_secret(data_dir / ROOT_PUBLIC_FILE, root.public, replace=True)
    write_secret(data_dir / STATEMENT_FILE, statement.to_bytes(), replace=True)


def certify(data_dir: Path, root: TrustRoot, now_ms: int, *, days: int,
            key_id: int | None = None, revoke_older: bool = False) -> ServerKey:
    """A fresh server key certified by ``root``, installed in ``data_dir``. Its id is the
    installed one's plus one unless given; ``revoke_older`` makes the statement refuse
    every older id."""
    refuse_root_in(data_dir)             # move it out first: the server would refuse it
    old_public = _read(data_dir / ROOT_PUBLIC_FILE)
    if old_public is not None and old_public != root.public:
        raise ConfigError(f"{data_dir} belongs to another trust root (fingerprint "
                          f"{fingerprint(old_public)}); its clients would not accept this one")
    old_key, old_min = 0, 1
    raw_server = _read(data_dir / SERVER_FILE)
    try:
        if raw_server is not None:
            old_key = ServerKey.from_bytes(raw_server).certificate.key_id
        raw_statement = _read(data_dir / STATEMENT_FILE)
        if raw_statement is not None:
            old_min = KeyStatement.from_bytes(raw_statement, root.public).min_key_id
    except CoreError as exc:
        raise ConfigError(f"the keys in {data_dir} are unusable: {exc}") from None
    new_id = key_id if key_id is not None else old_key + 1
    if not old_key < new_id <= 0xFFFFFFFF:
        raise ConfigError(f"the new server key id must be above the installed one ({old_key})")
    server_key = ServerKey.generate(root, new_id, now_ms + days * DAY_MS)
    statement = root.issue_statement(new_id if revoke_older else old_min, now_ms)
    install(data_dir, root, server_key, statement)
    return server_key


def move_root(data_dir: Path, out: Path, now_ms: int) -> TrustRoot:
    """Take a root written by earlier versions out of ``data_dir`` (to ``out``)."""
    raw = _read(data_dir / ROOT_FILE)
    if raw is None:
        raise ConfigError(f"{data_dir} holds no trust root private key")
    try:
        root = TrustRoot.from_bytes(raw)
        raw_server = _read(data_dir / SERVER_FILE)
        server_key = ServerKey.from_bytes(raw_server) if raw_server is not None else None
    except CoreError as exc:
        raise ConfigError(f"the keys in {data_dir} are unusable: {exc}") from None
    if data_dir.resolve() in out.resolve().parents:
        raise ConfigError("--out must be outside the data directory")
    write_secret(out, root.to_bytes())
    if server_key is None:
        server_key = ServerKey.generate(root, SERVER_KEY_ID, now_ms + SERVER_CERT_LIFETIME_MS)
    install(data_dir, root, server_key, root.issue_statement(1, now_ms))
    (data_dir / ROOT_FILE).unlink()
    return root


class CertificateAuthority:
    """Holds the server key of one deployment and signs sender certificates."""

    def __init__(self, data_dir: Path, now_ms: int) -> None:
        refuse_root_in(data_dir)
        self.generated_root = False
        if not (data_dir / SERVER_FILE).exists() and not (data_dir / ROOT_PUBLIC_FILE).exists():
            # First start of a throw-away setup: the root is made, used once, forgotten.
            root = TrustRoot.generate()
            install(data_dir, root,
                    ServerKey.generate(root, SERVER_KEY_ID, now_ms + SERVER_CERT_LIFETIME_MS),
                    root.issue_statement(1, now_ms))
            self.generated_root = True
        try:
            raw_server, raw_root = _read(data_dir / SERVER_FILE), _read(data_dir / ROOT_PUBLIC_FILE)
            raw_statement = _read(data_dir / STATEMENT_FILE)
            if raw_server is None or raw_root is None or raw_statement is None:
                raise ConfigError(f"{data_dir} lacks {SERVER_FILE}, {ROOT_PUBLIC_FILE} or "
                                  f"{STATEMENT_FILE}; run 'veil server keys certify'")
            self._server = ServerKey.from_bytes(raw_server)
            self._server.certificate.validate(raw_root, now_ms)
            statement = KeyStatement.from_bytes(raw_statement, raw_root)
        except CoreError as exc:
            raise ConfigError(f"server keys in {data_dir} are unusable: {exc}") from None
        if self._server.certificate.key_id < statement.min_key_id:
            raise ConfigError(f"server key {self._server.certificate.key_id} was revoked "
                              "(its id is below the key statement's); certify a new one")
        self.trust_root = raw_root
        self.fingerprint = fingerprint(raw_root)
        self.key_id = self._server.certificate.key_id
        self.expires_ms = self._server.certificate.expires_at
        self.min_key_id = statement.min_key_id
        self.server_certificate = self._server.certificate.to_bytes()
        self.key_statement = statement.to_bytes()

    def issue(self, account_id: bytes, device_id: int, identity_key: bytes, now_ms: int,
              ttl_s: int, username: str | None = None) -> SenderCertificate:
        """A sender certificate; it names ``username`` (version 2) when the account
        has one, so a recipient shows ``@name`` from the first message on."""
        try:
            identity = IdentityPublicKey.from_bytes(identity_key)
        except CoreError:
            raise ValidationFailed("this device's identity key is not a Veil identity key")\
                from None
        expires = now_ms + ttl_s * 1000
        cert = self._server.issue(account_id, device_id, identity, expires, username)
        return SenderCertificate(cert.to_bytes(), expires)

__all__ = [
    "ROOT_FILE",
    "ROOT_PUBLIC_FILE",
    "SERVER_FILE",
    "STATEMENT_FILE",
    "CertificateAuthority",
    "ConfigError",
    "certify",
    "move_root",
    "write_secret",
]
