"""Backup and restore of a data directory (issue 10 §5, item 3), in process.

The end-to-end check (a backup of a running server, restored, serves every queued
envelope) is tests/integration/server/test_operations.py.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from veil.cli.serve import server as server_cli
from veil.server.backup import FORMAT, FORMAT_VERSION, KEY_FILES, MANIFEST, backup, restore
from veil.server.certificates import CertificateAuthority
from veil.server.config import ServerConfig
from veil.server.errors import BackupError, InvalidBackup, RestoreTargetNotEmpty
from veil.server.storage import DATABASE_FILE
from veil.server.storage.migrations import SCHEMA_VERSION
from veil.server.storage.sqlite import SQLiteStorage


def now_ms() -> int:
    return int(time.time() * 1000)


async def make_server_dir(data: Path, invites: int = 0) -> None:
    """A data directory as a first server start leaves it: database and key files."""
    storage = SQLiteStorage(data / DATABASE_FILE)
    await storage.open()
    try:
        for i in range(invites):
            await storage.add_invite(hashlib.sha256(b"%d" % i).digest(), now_ms() + 10**9)
    finally:
        await storage.close()
    CertificateAuthority(data, now_ms())


def invite_hashes(db: Path) -> list[bytes]:
    conn = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in conn.execute("SELECT token_hash FROM invites"))
    finally:
        conn.close()


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        out = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            assert fh is not None
            out[m.name] = fh.read()
        return out


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    asyncio.run(make_server_dir(d, invites=25))
    return d


@pytest.fixture
def archive(data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "backup.tar.gz"
    backup(ServerConfig(data_dir=data), out)
    return out


def test_backup_is_one_private_file_with_a_manifest(data: Path, archive: Path):
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert not list(archive.parent.glob(".veil-backup-*"))  # staging removed
    assert not archive.with_name(archive.name + ".partial").exists()
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == MANIFEST
    files = members(archive)
    manifest = json.loads(files[MANIFEST])
    assert manifest["format"] == FORMAT and manifest["format_version"] == FORMAT_VERSION
    assert manifest["storage"] == "sqlite" and manifest["schema_version"] == SCHEMA_VERSION
    assert {f["name"] for f in manifest["files"]} == {DATABASE_FILE, *KEY_FILES}
    assert set(files) == {MANIFEST, DATABASE_FILE, *KEY_FILES}
    for entry in manifest["files"]:
        assert hashlib.sha256(files[entry["name"]]).hexdigest() == entry["sha256"]
    for name in KEY_FILES:
        assert files[name] == (data / name).read_bytes()
    assert any("trust root's private key" in note for note in manifest["not_included"])


def test_restore_gives_the_same_database_and_keys(data: Path, archive: Path, tmp_path: Path):
    target = tmp_path / "restored"
    report = restore(archive, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.iterdir()) == sorted([DATABASE_FILE, *KEY_FILES])
    for name in KEY_FILES:
        assert (target / name).read_bytes() == (data / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert invite_hashes(target / DATABASE_FILE) == invite_hashes(data / DATABASE_FILE)
    assert len(invite_hashes(target / DATABASE_FILE)) == 25
    assert CertificateAuthority(target, now_ms()).fingerprint == \
        CertificateAuthority(data, now_ms()).fingerprint
    assert any("veil server --data" in str(line) for line in report.lines)
    assert not list(tmp_path.glob(".restored.restore-*"))


def test_restore_into_an_existing_empty_directory(archive: Path, tmp_path: Path):
    target = tmp_path / "empty"
    target.mkdir()
    restore(archive, target)
    assert (target / DATABASE_FILE).exists()


async def test_backup_while_a_writer_commits_is_a_consistent_snapshot(tmp_path: Path):
    """A writer commits two invites per transaction while the backup runs (WAL, the
    server's settings): the copy holds whole transactions only, and everything
    committed before the backup began."""
    data = tmp_path / "data"
    await make_server_dir(data)
    storage = SQLiteStorage(data / DATABASE_FILE)
    await storage.open()  # the server's own connection stays open throughout (WAL)
    stop, reached = threading.Event(), threading.Event()
    committed = [0]

    def writer() -> None:
        conn = sqlite3.connect(data / DATABASE_FILE, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        i = 0
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(2):
                i += 1
                conn.execute("INSERT INTO invites VALUES (?, ?)",
                             (b"w%08d" % i, now_ms() + 10**9))
            conn.execute("COMMIT")
            committed[0] = i
            if i >= 200:
                reached.set()
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert await asyncio.to_thread(reached.wait, 60)
        before = committed[0]
        assert before >= 200
        out = tmp_path / "online.tar.gz"
        backup(ServerConfig(data_dir=data), out)
    finally:
        stop.set()
        thread.join()
        await storage.close()
    target = tmp_path / "restored"
    restore(out, target)
    written = [h for h in invite_hashes(target / DATABASE_FILE) if h.startswith(b"w")]
    assert len(written) % 2 == 0, "a transaction was copied in half"
    assert len(written) >= before
    (check,) = sqlite3.connect(target / DATABASE_FILE).execute("PRAGMA integrity_check") \
        .fetchone()
    assert check == "ok"


def test_backup_refuses_a_directory_without_a_server(tmp_path: Path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(BackupError, match="holds no complete Veil server"):
        backup(ServerConfig(data_dir=empty), tmp_path / "b.tar.gz")
    with pytest.raises(BackupError, match="does not exist"):
        backup(ServerConfig(data_dir=tmp_path / "absent"), tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    assert not (empty / DATABASE_FILE).exists()  # not created by the attempt


def test_backup_refuses_to_overwrite_or_write_into_the_data_dir(data: Path, archive: Path):
    before = archive.read_bytes()
    with pytest.raises(BackupError, match="exists; refusing to overwrite"):
        backup(ServerConfig(data_dir=data), archive)
    assert archive.read_bytes() == before
    with pytest.raises(BackupError, match="outside the data directory"):
        backup(ServerConfig(data_dir=data), data / "inside.tar.gz")


def test_restore_refuses_a_non_empty_target(archive: Path, tmp_path: Path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(RestoreTargetNotEmpty) as info:
        restore(archive, target)
    assert info.value.code == "restore_target_not_empty"
    assert "\n" not in str(info.value)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".busy.restore-*"))


def _refused(source: Path, tmp_path: Path, match: str) -> None:
    target = tmp_path / "target"
    with pytest.raises(InvalidBackup, match=match) as info:
        restore(source, target)
    assert info.value.code == "invalid_backup"
    assert "\n" not in str(info.value)
    assert not target.exists(), "a refused restore left a directory behind"
    assert not list(tmp_path.glob(".target.restore-*"))


def test_restore_refuses_a_file_that_is_not_an_archive(tmp_path: Path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(4096))
    _refused(junk, tmp_path, "damaged or not a backup archive")


def test_restore_refuses_a_truncated_archive(archive: Path, tmp_path: Path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    _refused(cut, tmp_path, "damaged|lacks")


def test_restore_refuses_a_flipped_byte(archive: Path, tmp_path: Path):
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    bad = tmp_path / "flipped.tar.gz"
    bad.write_bytes(bytes(raw))
    _refused(bad, tmp_path, "damaged|checksum")


def test_restore_refuses_a_member_that_does_not_match_its_checksum(
    archive: Path, tmp_path: Path
):
    files = members(archive)
    db = bytearray(files[DATABASE_FILE])
    db[-1] ^= 0xFF  # same size, other content: only the checksum can tell
    files[DATABASE_FILE] = bytes(db)
    forged = tmp_path / "forged.tar.gz"
    write_tar(forged, files)
    _refused(forged, tmp_path, f"{DATABASE_FILE} does not match its checksum")


def test_restore_refuses_unknown_formats_and_foreign_members(archive: Path, tmp_path: Path):
    files = members(archive)
    manifest = json.loads(files[MANIFEST])

    def variant(name: str, change: dict[str, object] | None = None,
                extra: dict[str, bytes] | None = None, drop: str | None = None) -> Path:
        doc = {**manifest, **(change or {})}
        out = {MANIFEST: json.dumps(doc).encode(),
               **{k: v for k, v in files.items() if k not in (MANIFEST, drop)},
               **(extra or {})}
        path = tmp_path / name
        write_tar(path, out)
        return path

    _refused(variant("other.tar.gz", {"format": "something-else"}), tmp_path,
             "not a veil-server-backup manifest")
    _refused(variant("newer.tar.gz", {"format_version": FORMAT_VERSION + 1}), tmp_path,
             "made by a newer Veil")
    _refused(variant("schema.tar.gz", {"schema_version": SCHEMA_VERSION + 2,
                                       "compat_version": SCHEMA_VERSION + 1}),
             tmp_path, "newer Veil .schema")
    _refused(variant("escape.tar.gz", extra={"../evil": b"x"}), tmp_path,
             "unexpected member")
    _refused(variant("lacking.tar.gz", drop=KEY_FILES[0]), tmp_path, "lacks")
    assert not (tmp_path / "evil").exists()
    no_manifest = tmp_path / "nomanifest.tar.gz"
    write_tar(no_manifest, {k: v for k, v in files.items() if k != MANIFEST})
    _refused(no_manifest, tmp_path, "does not start with MANIFEST.json")
    plain = tmp_path / "plain.gz"
    plain.write_bytes(gzip.compress(b"not a tar"))
    _refused(plain, tmp_path, "damaged or not a backup archive")


def test_postgres_backup_holds_the_keys_and_says_to_use_pg_dump(data: Path, tmp_path: Path):
    """No database is read: the report names pg_dump, the password never appears."""
    config = ServerConfig(data_dir=data,
                          database_url="postgresql://veil:s3cret@db.example:5432/veil")
    out = tmp_path / "pg.tar.gz"
    report = backup(config, out)
    text = "\n".join(map(str, report.lines))
    assert "pg_dump" in text and "s3cret" not in text
    assert "postgresql://veil@db.example:5432/veil" in text
    files = members(out)
    assert set(files) == {MANIFEST, *KEY_FILES}
    assert json.loads(files[MANIFEST])["storage"] == "postgres"
    assert b"s3cret" not in out.read_bytes() and b"s3cret" not in gzip.decompress(
        out.read_bytes())
    target = tmp_path / "pg-restored"
    restored = restore(out, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(KEY_FILES)
    assert any("pg_restore" in str(line) for line in restored.lines)


@pytest.fixture
def cli() -> Iterator[CliRunner]:
    yield CliRunner()


def test_cli_backup_and_restore(data: Path, tmp_path: Path, cli: CliRunner):
    out = tmp_path / "cli.tar.gz"
    result = cli.invoke(server_cli, ["backup", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mode 0600" in result.output
    assert "trust root's private key" in result.output
    assert "outside the data" in result.output
    result = cli.invoke(server_cli, ["restore", "--from", str(out),
                                     "--data", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / DATABASE_FILE).exists()
    again = cli.invoke(server_cli, ["restore", "--from", str(out),
                                    "--data", str(tmp_path / "new")])
    assert isinstance(again.exception, RestoreTargetNotEmpty)
    missing = cli.invoke(server_cli, ["restore", "--from", str(out)])
    assert missing.exit_code == 2 and "restore needs --data" in missing.output
