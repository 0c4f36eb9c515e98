"""What the server tells its operator in words (start-up, backup, restore, retention), as
data.

The server speaks English; the ``veil`` command shows the same lines in the operator's
language (``veil.cli.catalog.SERVER_LINES_ZH`` has a Chinese template for every key
here, with the same fields — tests/unit/cli/test_i18n.py checks it). So each line is a
key and its fields, and ``str()`` of it is the English text that
``python -m veil.server`` prints and logs keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

LINES: Final[dict[str, str]] = {
    "listening": "veil server listening on {url} (data in {data})",
    "trust_root": "trust root fingerprint {fingerprint} (server key {key_id})",
    "connect": "connect a client with: veil init --server {url} --trust-root {fingerprint}",
    "throwaway_root": "made a throw-away trust root and kept no copy of its private key: "
    "this server key can never be rotated or revoked (for a lasting deployment see "
    "'veil server keys --help')",
    "api_docs": "API docs: {url}/docs",
    # The admin listener (server/admin/): metrics, health, dashboard, admin API.
    "admin": "admin: {url} — metrics at /metrics (dashboard {url}/admin/, token in {token})",
    # TLS on the listener (server/tls.py, issue 13 §1).
    "tls_generated": "made a new self-signed TLS certificate in {path}",
    "tls_self_signed": "TLS 1.3 with the self-signed certificate {path} (valid until "
    "{expires}); clients pin its SHA-256 fingerprint {fingerprint}",
    "tls_certificate": "TLS 1.3 with the certificate {path} (valid until {expires}, "
    "SHA-256 fingerprint {fingerprint})",
    "connect_pinned": "connect a client with: veil init --server {url} --pin {pin} "
    "--trust-root {fingerprint}",
    "plain_public": "WARNING: serving plain HTTP WITHOUT TLS on {host} (--insecure-public): "
    "account tokens and traffic cross the network readable by anyone on the path; use "
    "this only behind a proxy that terminates TLS",
    "backup_written": "backup written to {path} ({size}, mode 0600: it holds the server's "
    "signing key; keep it private)",
    "backup_postgres": "storage is PostgreSQL: this archive holds the key files only; back "
    "up the database with pg_dump --format=custom --file veil.dump {url}",
    "backup_sqlite": "database copied online at schema {schema}, with {files}",
    "backup_not_included": "not included: the trust root's private key (it lives outside "
    "the data directory: back it up offline yourself), the config file and the logs",
    "backup_root_inside": "warning: {path} is a trust root private key inside the data "
    "directory; it is not in the backup: move it out with 'veil server keys move-root'",
    "restored": "restored {files} into {data} (backup of {when}, Veil {version})",
    "restore_postgres": "storage is PostgreSQL: restore the database with pg_restore from "
    "its pg_dump, and set database_url in the config file",
    "restore_start": "start the server with: veil server --data {data}",
    # The retention job (services/retention.py): counts only, never whose or what.
    "expired": "retention: deleted {envelopes} queued envelopes ({bytes} bytes), "
    "{group_messages} group messages, {groups} idle groups and {key_packages} KeyPackages; "
    "{pages} free database pages given back",
}


@dataclass(frozen=True)
class Line:
    """One line for the operator: ``key`` in :data:`LINES`, and its fields."""

    key: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return LINES[self.key].format(**self.fields)


def line(key: str, **fields: Any) -> Line:
    if key not in LINES:
        raise KeyError(f"no operator line {key!r}")
    return Line(key, fields)

__all__ = [
    "LINES",
    "Line",
    "line",
]
