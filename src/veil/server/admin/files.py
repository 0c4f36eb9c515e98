"""The files by which ``veil admin`` finds a running server (issue 13 §4).

Under ``DATA/admin/``: ``address``, the admin listener's URL, written when the listener
is up and removed when it stops (a left-over file after ``kill -9`` points at a closed
port, which the command reports as a stopped server); and ``token``, the bearer token of
the admin API and the dashboard, random, mode 0600, made once and kept across restarts
(so the operator's saved login survives them). Delete it to change the token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from veil.server.errors import ConfigError

ADMIN_DIR = "admin"
ADDRESS_FILE = "address"
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret
TOKEN_BYTES = 32


def admin_dir(data_dir: Path) -> Path:
    return data_dir / ADMIN_DIR


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_token(data_dir: Path) -> str:
    """The admin token of this data directory, made on first use."""
    directory = admin_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
    path = directory / TOKEN_FILE
    token = read_token(data_dir)
    if token:
        with contextlib.suppress(OSError):  # tightened if someone loosened it
            os.chmod(path, 0o600)
        return token
    token = secrets.token_urlsafe(TOKEN_BYTES)
    _write_private(path, token + "\n")
    return token


def read_token(data_dir: Path) -> str | None:
    try:
        text = (admin_dir(data_dir) / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token: {exc.strerror or exc}") from exc
    return text or None


def write_address(data_dir: Path, url: str) -> None:
    directory = admin_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(directory / ADDRESS_FILE, url + "\n")


def read_address(data_dir: Path) -> str | None:
    try:
        text = (admin_dir(data_dir) / ADDRESS_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def remove_address(data_dir: Path, url: str) -> None:
    """Remove the address file if it still names ``url`` (not a later server's)."""
    if read_address(data_dir) == url:
        with contextlib.suppress(OSError):
            (admin_dir(data_dir) / ADDRESS_FILE).unlink()


__all__ = [
    "ADDRESS_FILE",
    "ADMIN_DIR",
    "TOKEN_FILE",
    "admin_dir",
    "load_or_create_token",
    "read_address",
    "read_token",
    "remove_address",
    "write_address",
]
