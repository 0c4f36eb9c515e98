"""Online backup and restore of one server's data directory (issue 10 §5, item 3).

A backup is one file (mode 0600: it holds the server's signing key), a gzip-compressed
tar archive whose first member is ``MANIFEST.json``::

    {"format": "veil-server-backup", "format_version": 1, "created_ms": ...,
     "veil_version": "...", "storage": "sqlite" | "postgres",
     "schema_version": 2, "compat_version": 1,          (null for PostgreSQL)
     "files": [{"name": "veil.sqlite3", "size": ..., "sha256": "..."}, ...],
     "not_included": ["..."]}

followed by exactly the files it names, each under its data-directory name:

- ``veil.sqlite3`` (SQLite deployments): a consistent copy made while the server runs,
  with SQLite's online backup API (``sqlite3.Connection.backup``) from a connection of
  its own. The copy is one read transaction of the WAL database, so it holds every
  transaction committed before it began and none half; writers are not blocked. The
  copy is checked (``PRAGMA quick_check``) and left in rollback-journal mode, one file;
- the key files of ``veil.server.certificates``: the server signing key with its
  certificate, the trust root's public key and the root-signed key statement.

Not included, and said so in the report: the trust root's *private* key, which lives
outside the data directory on purpose (whoever holds it can certify server keys every
client accepts: keep it offline, backed up on its own); the configuration file; the
logs; the lock file. For PostgreSQL deployments (``database_url``) the database is
backed up with ``pg_dump`` and restored with ``pg_restore``; the archive then holds the
key files only.

:func:`restore` refuses a target that is not empty, and an archive that is not a Veil
backup, is damaged (a checksum, size or member that does not match the manifest), of a
newer format, or holds a database of a newer, incompatible schema. It extracts into a
staging directory next to the target and moves the files in only once all of them
verified, so a refused restore leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from veil import __version__
from veil.server.certificates import ROOT_FILE, ROOT_PUBLIC_FILE, SERVER_FILE, STATEMENT_FILE
from veil.server.config import ServerConfig
from veil.server.errors import BackupError, InvalidBackup, RestoreTargetNotEmpty
from veil.server.lines import Line, line
from veil.server.storage import DATABASE_FILE
from veil.server.storage.migrations import SCHEMA_VERSION

FORMAT = "veil-server-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
KEY_FILES = (SERVER_FILE, ROOT_PUBLIC_FILE, STATEMENT_FILE)
_MAX_MANIFEST_BYTES = 64 * 1024
_CHUNK = 1 << 20
_ROOT_NOTE = ("not included: the trust root's private key, kept outside the data "
              "directory on purpose; back it up offline on its own")
_CONFIG_NOTE = "not included: the configuration file (--config) and the logs"


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format_version: int
    created_ms: int
    veil_version: str
    storage: str
    schema_version: int | None
    compat_version: int | None
    files: tuple[FileEntry, ...]
    not_included: tuple[str, ...]

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "format_version": self.format_version,
            "created_ms": self.created_ms, "veil_version": self.veil_version,
            "storage": self.storage, "schema_version": self.schema_version,
            "compat_version": self.compat_version,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256}
                      for f in self.files],
            "not_included": list(self.not_included),
        }, indent=2).encode() + b"\n"


@dataclass(frozen=True)
class Report:
    """What :func:`backup` or :func:`restore` did, and the lines to tell the operator."""

    path: Path
    manifest: Manifest
    lines: tuple[Line, ...]


# --- backup -------------------------------------------------------------------------

def backup(config: ServerConfig, out: Path, now_ms: int | None = None) -> Report:
    """Write a backup of ``config``'s deployment to ``out`` (which must not exist).

    Safe while the server runs (it takes no lock the server needs). Raises BackupError
    when the data directory holds no server or ``out`` exists.
    """
    data_dir = config.data_dir
    created = int(time.time() * 1000) if now_ms is None else now_ms
    postgres = bool(config.database_url)
    _check_source(data_dir, postgres)
    out = out.absolute()
    if out.exists() or out.is_symlink():
        raise BackupError(f"{out} exists; refusing to overwrite it (choose a new --out)")
    if data_dir.resolve() in out.resolve().parents:
        raise BackupError("--out must be outside the data directory")
    if not out.parent.is_dir():
        raise BackupError(f"the directory of --out, {out.parent}, does not exist")

    staging = Path(tempfile.mkdtemp(prefix=".veil-backup-", dir=out.parent))
    partial = out.with_name(out.name + ".partial")
    try:
        sources: list[tuple[str, Path]] = []
        schema = compat = None
        if not postgres:
            copy = staging / DATABASE_FILE
            schema, compat = _copy_database(data_dir / DATABASE_FILE, copy)
            sources.append((DATABASE_FILE, copy))
        for name in KEY_FILES:
            target = staging / name
            shutil.copyfile(data_dir / name, target)
            sources.append((name, target))
        notes = [_ROOT_NOTE, _CONFIG_NOTE]
        if postgres:
            notes.insert(0, "not included: the PostgreSQL database; back it up with "
                            "pg_dump (e.g. pg_dump --format=custom --file veil.dump "
                            f"{_public_url(config.database_url)})")
        manifest = Manifest(
            FORMAT_VERSION, created, __version__, "postgres" if postgres else "sqlite",
            schema, compat, tuple(_entry(name, path) for name, path in sources),
            tuple(notes))
        _write_archive(partial, manifest, sources)
        os.replace(partial, out)
        _fsync_dir(out.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    size = out.stat().st_size
    lines = [line("backup_written", path=out, size=_bytes(size))]
    if postgres:
        lines.append(line("backup_postgres", url=_public_url(config.database_url)))
    else:
        lines.append(line("backup_sqlite", schema=schema, files=", ".join(KEY_FILES)))
    lines.append(line("backup_not_included"))
    if (data_dir / ROOT_FILE).exists():
        lines.append(line("backup_root_inside", path=data_dir / ROOT_FILE))
    return Report(out, manifest, tuple(lines))


def _check_source(data_dir: Path, postgres: bool) -> None:
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir} is not a data directory (it does not exist)")
    needed = ([] if postgres else [DATABASE_FILE]) + list(KEY_FILES)
    missing = [name for name in needed if not (data_dir / name).is_file()]
    if missing:
        raise BackupError(f"{data_dir} holds no complete Veil server (missing "
                          f"{', '.join(missing)}); give the --data of an existing server")


def _copy_database(source: Path, target: Path) -> tuple[int, int]:
    """An online, consistent copy of ``source``; returns its schema and compat version."""
    try:
        src = sqlite3.connect(source, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open the database {source}: {exc}") from None
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.execute("PRAGMA query_only=ON")
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # One step (pages=-1): the whole copy is one read transaction, a snapshot.
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            (check,) = dst.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise BackupError(f"the database {source} is damaged ({check}); "
                                  "no backup was written")
            schema, compat = _versions(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up the database {source}: {exc}") from None
    finally:
        src.close()
    os.chmod(target, 0o600)
    if schema == 0:
        raise BackupError(f"{source} is not a Veil database (no schema); no backup written")
    return schema, compat


def _versions(conn: sqlite3.Connection) -> tuple[int, int]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_migrations" not in tables:
        return 0, 0
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")\
        .fetchone()
    compat = 0
    if "schema_compat_version" in tables:
        row = conn.execute("SELECT compat_version FROM schema_compat_version WHERE id = 1")\
            .fetchone()
        compat = 0 if row is None else int(row[0])
    return int(version), compat


def _entry(name: str, path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(name, size, digest.hexdigest())


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    info.type = tarfile.REGTYPE
    return info


def _write_archive(path: Path, manifest: Manifest,
                   sources: list[tuple[str, Path]]) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            raw = manifest.to_json()
            mtime = manifest.created_ms / 1000
            tar.addfile(_tar_info(MANIFEST, len(raw), mtime), io.BytesIO(raw))
            for (name, source), entry in zip(sources, manifest.files, strict=True):
                with source.open("rb") as data:
                    tar.addfile(_tar_info(name, entry.size, mtime), data)
        fh.flush()
        os.fsync(fh.fileno())


# --- restore ------------------------------------------------------------------------

def restore(source: Path, data_dir: Path) -> Report:
    """Restore the backup ``source`` into ``data_dir``, which must be new or empty."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist or is not a file")
    _check_target(data_dir)
    parent = data_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=parent))
    try:
        manifest = _extract(source, staging)
        _check_target(data_dir)  # again: nothing may have appeared meanwhile
        if data_dir.exists():
            for entry in manifest.files:
                os.replace(staging / entry.name, data_dir / entry.name)
        else:
            os.rename(staging, data_dir)
        with contextlib.suppress(OSError):
            os.chmod(data_dir, 0o700)
        _fsync_dir(data_dir)
        _fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    names = ", ".join(entry.name for entry in manifest.files)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(manifest.created_ms / 1000))
    lines = [line("restored", files=names, data=data_dir, when=when,
                  version=manifest.veil_version)]
    if manifest.storage == "postgres":
        lines.append(line("restore_postgres"))
    else:
        lines.append(line("restore_start", data=data_dir))
    return Report(data_dir, manifest, tuple(lines))


def _check_target(data_dir: Path) -> None:
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        raise RestoreTargetNotEmpty(f"{data_dir} exists and is not a directory; restore "
                                    "into a new or empty directory")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise RestoreTargetNotEmpty(f"{data_dir} is not empty; restore into a new or empty "
                                    "directory (nothing was changed)")


def _damaged(source: Path, why: str) -> InvalidBackup:
    return InvalidBackup(f"{source} is not a usable Veil server backup: {why}")


def _extract(source: Path, staging: Path) -> Manifest:
    try:
        with tarfile.open(source, mode="r:*") as tar:
            members = _members(tar)
            first = next(members, None)
            if first is None or first.name != MANIFEST:
                raise _damaged(source, f"it does not start with {MANIFEST}")
            manifest = _parse_manifest(source, _read_member(tar, first, _MAX_MANIFEST_BYTES))
            expected = {entry.name: entry for entry in manifest.files}
            seen: set[str] = set()
            for member in members:
                entry = expected.get(member.name)
                if entry is None or member.name in seen:
                    raise _damaged(source, f"unexpected member {member.name!r}")
                seen.add(member.name)
                _extract_file(source, tar, member, entry, staging / entry.name)
            missing = sorted(set(expected) - seen)
            if missing:
                raise _damaged(source, f"it lacks {', '.join(missing)} (truncated?)")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and not _is_format_error(exc):
            raise BackupError(f"cannot read {source} or write {staging.parent}: "
                              f"{exc.strerror or exc}") from None
        raise _damaged(source, f"damaged or not a backup archive ({_reason(exc)})") from None
    return manifest


def _is_format_error(exc: OSError) -> bool:
    # gzip.BadGzipFile is an OSError; real I/O errors carry an errno.
    return exc.errno is None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, tarfile.ReadError) and "could not be opened" in str(exc):
        return "not a tar or tar.gz archive"
    text = " ".join(str(exc).split())[:160].rstrip(":")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg() or member.size > limit:
        raise tarfile.TarError(f"{member.name} is not a small regular file")
    fh = tar.extractfile(member)
    if fh is None:
        raise tarfile.TarError(f"{member.name} has no content")
    with fh:
        return fh.read()


def _extract_file(source: Path, tar: tarfile.TarFile, member: tarfile.TarInfo,
                  entry: FileEntry, target: Path) -> None:
    if not member.isreg() or member.size != entry.size:
        raise _damaged(source, f"{entry.name} is not the file its manifest describes")
    fh = tar.extractfile(member)
    if fh is None:
        raise _damaged(source, f"{entry.name} has no content")
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with fh, os.fdopen(fd, "wb") as out:
        _copy(fh, out, digest)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != entry.sha256:
        raise _damaged(source, f"{entry.name} does not match its checksum")


def _copy(src: IO[bytes], dst: IO[bytes], digest: Any) -> None:
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)


_ALLOWED = {"sqlite": (DATABASE_FILE, *KEY_FILES), "postgres": KEY_FILES}


def _parse_manifest(source: Path, raw: bytes) -> Manifest:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _damaged(source, f"its {MANIFEST} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _damaged(source, f"its {MANIFEST} is not a {FORMAT} manifest")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(source, "its manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise InvalidBackup(f"{source} was made by a newer Veil (backup format {version}; "
                            f"this one reads {FORMAT_VERSION}); upgrade Veil to restore it")
    storage = doc.get("storage")
    if storage not in _ALLOWED:
        raise _damaged(source, f"unknown storage {storage!r} in its manifest")
    try:
        files = tuple(_file_entry(item) for item in doc["files"])
        schema, compat = doc.get("schema_version"), doc.get("compat_version")
        created, veil = int(doc["created_ms"]), str(doc["veil_version"])
        notes = tuple(str(n) for n in doc.get("not_included", []))
    except (KeyError, TypeError, ValueError):
        raise _damaged(source, "its manifest is incomplete or malformed") from None
    names = [f.name for f in files]
    required = set(_ALLOWED[storage])
    if len(set(names)) != len(names) or set(names) != required:
        raise _damaged(source, f"its manifest names {names}, expected {sorted(required)}")
    if storage == "sqlite":
        if not (isinstance(schema, int) and isinstance(compat, int)):
            raise _damaged(source, "its manifest has no schema version")
        if compat > SCHEMA_VERSION:
            raise InvalidBackup(
                f"{source} holds a database written by a newer Veil (schema {schema}, "
                f"needs at least {compat}); upgrade Veil to restore it")
    return Manifest(version, created, veil, str(storage),
                    schema if isinstance(schema, int) else None,
                    compat if isinstance(compat, int) else None, files, notes)


def _file_entry(item: Any) -> FileEntry:
    name, size, digest = item["name"], item["size"], item["sha256"]
    if not (isinstance(name, str) and isinstance(size, int) and isinstance(digest, str)
            and size >= 0 and len(digest) == 64):
        raise ValueError("bad file entry")
    int(digest, 16)
    return FileEntry(name, size, digest.lower())


# --- helpers ------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _public_url(url: str) -> str:
    """``database_url`` without its password (and without query parameters)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_FILES",
    "MANIFEST",
    "FileEntry",
    "Manifest",
    "Report",
    "backup",
    "restore",
]
