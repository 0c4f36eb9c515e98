"""Operating a server (issue 10 §5): the data-directory lock, ``invite`` refusing a
directory without a server, rotating logs and one-line client-gone records, in process.

The process-level checks (a second ``veil server``, ``kill -9``, reset floods) are in
tests/integration/server/test_operations.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from veil.cli.serve import server as server_cli
from veil.server.config import ServerConfig, load_config
from veil.server.datadir_lock import LOCK_FILE, DataDirectoryLock
from veil.server.errors import ConfigError, DataDirectoryInUse, NotAServerDirectory
from veil.server.runner import (
    LOG_FILE,
    ClientGoneFilter,
    log_handlers,
    log_level,
    mint_invites,
    start,
)
from veil.server.storage import DATABASE_FILE

# --- the lock ----------------------------------------------------------------------


def test_second_lock_on_a_directory_is_refused_with_the_holder(tmp_path: Path):
    data = tmp_path / "data"
    with DataDirectoryLock.acquire(data) as first:
        assert first.held
        assert (data / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DataDirectoryInUse) as info:
            DataDirectoryLock.acquire(data)
        err = info.value
        assert err.code == "data_directory_in_use" and err.pid == os.getpid()
        assert str(err) == (
            f"another veil server (pid {os.getpid()}) is already running on the data "
            f"directory {data} (it holds {data / LOCK_FILE}); stop it first or use "
            f"another --data")
    assert not first.held
    DataDirectoryLock.acquire(data).release()  # free again
    first.release()  # idempotent


def test_lock_of_a_killed_process_is_free_at_once(tmp_path: Path):
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; "
         "from veil.server.datadir_lock import DataDirectoryLock as L; "
         f"lock = L.acquire(Path({str(data)!r})); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirectoryInUse) as info:
            DataDirectoryLock.acquire(data)
        assert info.value.pid == holder.pid
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait(30)
    DataDirectoryLock.acquire(data).release()
    assert (data / LOCK_FILE).exists()  # left behind, and harmless


async def test_in_process_server_holds_the_lock_until_closed(tmp_path: Path):
    config = ServerConfig(data_dir=tmp_path / "data", port=0, log_to_file=False)
    running = await start(config)
    try:
        with pytest.raises(DataDirectoryInUse):
            await start(config.replace(port=0))
        with pytest.raises(DataDirectoryInUse):
            DataDirectoryLock.acquire(config.data_dir)
    finally:
        await running.close()
    again = await start(config)  # released by close
    await again.close()


# --- invite needs a server -----------------------------------------------------------


async def test_invite_refuses_a_directory_without_a_database(tmp_path: Path):
    empty = tmp_path / "typo"
    with pytest.raises(NotAServerDirectory) as info:
        await mint_invites(ServerConfig(data_dir=empty), 1, 1)
    assert info.value.code == "not_a_server_directory"
    assert "holds no Veil server" in str(info.value) and "\n" not in str(info.value)
    assert not empty.exists()


def test_cli_invite_refuses_a_directory_without_a_database(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(server_cli, ["--data", str(empty), "invite"])
    assert isinstance(result.exception, NotAServerDirectory)
    assert result.output == ""  # no token printed
    assert not (empty / DATABASE_FILE).exists()
    assert list(empty.iterdir()) == []


async def test_invite_works_on_a_server_directory(tmp_path: Path):
    config = ServerConfig(data_dir=tmp_path / "data", port=0, log_to_file=False)
    running = await start(config)
    try:  # while the server runs, too
        tokens = await mint_invites(config, 3, 1)
    finally:
        await running.close()
    assert len(set(tokens)) == 3


# --- logs --------------------------------------------------------------------------


def test_log_settings_from_the_config_file(tmp_path: Path):
    cfg = tmp_path / "server.toml"
    cfg.write_text('log_level = "debug"\nlog_max_bytes = 4096\nlog_backups = 2\n')
    config = load_config(cfg)
    assert (config.log_max_bytes, config.log_backups) == (4096, 2)
    assert log_level(config) == logging.DEBUG
    defaults = ServerConfig()
    assert defaults.log_max_bytes == 10 << 20 and defaults.log_backups == 5
    with pytest.raises(ConfigError, match="log_max_bytes must be positive"):
        ServerConfig(log_max_bytes=0)
    with pytest.raises(ConfigError, match="log_level must be one of"):
        log_level(ServerConfig(log_level="loud"))


def test_log_file_rotates_within_its_bounds(tmp_path: Path):
    config = ServerConfig(data_dir=tmp_path, log_max_bytes=2000, log_backups=2)
    handlers = log_handlers(config)
    logger = logging.getLogger("veil.test_rotation")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    file_handler = handlers[1]
    logger.addHandler(file_handler)
    try:
        for i in range(500):
            logger.info("line %d %s", i, "x" * 40)
    finally:
        logger.removeHandler(file_handler)
        for h in handlers:
            h.close()
    logs = sorted((tmp_path / LOG_FILE).parent.iterdir())
    assert [p.name for p in logs] == ["server.log", "server.log.1", "server.log.2"]
    assert all(p.stat().st_size <= 2000 for p in logs)
    assert "line 499 " in (tmp_path / LOG_FILE).read_text()


def _record(name: str, exc: BaseException, level: int = logging.ERROR) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.getLogger(name).makeRecord(
            name, level, __file__, 1, "Error handling request from %s", ("10.0.0.1",),
            sys.exc_info())


def test_client_gone_records_become_one_debug_line(tmp_path: Path):
    name = "aiohttp.veil_test"
    logger = logging.getLogger(name)
    before = logger.level
    gone = ClientGoneFilter()
    formatter = logging.Formatter("%(levelname)s %(message)s")
    try:
        logger.setLevel(logging.WARNING)
        record = _record(name, ConnectionResetError("Connection lost"))
        assert gone.filter(record) is False  # DEBUG is off: dropped
        assert gone.filter(record) is False  # and for every further handler too
        logger.setLevel(logging.DEBUG)
        record = _record(name, ConnectionResetError("Connection lost"))
        assert gone.filter(record) is True
        line = formatter.format(record)
        assert line == ("DEBUG Error handling request from 10.0.0.1: ConnectionResetError: "
                        "Connection lost")
        # A fault of the server keeps its level and its traceback.
        bug = _record(name, ValueError("bug"))
        assert gone.filter(bug) is True and bug.levelno == logging.ERROR
        assert "Traceback" in formatter.format(bug)
        # The server's own records decide their own level.
        own = _record("veil.server.http", ConnectionResetError("x"))
        assert gone.filter(own) is True and own.levelno == logging.ERROR
    finally:
        logger.setLevel(before)


def test_invite_does_not_need_the_lock(tmp_path: Path):
    """``invite`` works while a server holds the lock (it does not take it)."""
    data = tmp_path / "data"
    config = ServerConfig(data_dir=data, log_to_file=False)

    async def prepare() -> None:
        running = await start(config.replace(port=0))
        await running.close()

    asyncio.run(prepare())
    with DataDirectoryLock.acquire(data):
        result = CliRunner().invoke(server_cli, ["--data", str(data), "invite",
                                                 "--count", "2"])
        assert result.exit_code == 0, result.output
        assert len(result.output.split()) == 2
