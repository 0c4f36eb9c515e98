"""``veil server`` command: help, invites, and one-line errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from veil.cli.serve import server
from veil.server.storage.sqlite import SQLiteStorage


def test_help_lists_options_and_invite():
    result = CliRunner().invoke(server, ["--help"])
    assert result.exit_code == 0
    for word in ("--data", "--host", "--port", "--config", "invite"):
        assert word in result.output


async def _server_dir(path: Path) -> None:
    """A data directory that holds a server (invite refuses one that does not)."""
    storage = SQLiteStorage(path / "veil.sqlite3")
    await storage.open()
    await storage.close()


def test_invite_mints_distinct_tokens(tmp_path: Path):
    asyncio.run(_server_dir(tmp_path))
    result = CliRunner().invoke(server, ["--data", str(tmp_path), "invite", "--count", "3"])
    assert result.exit_code == 0, result.output
    tokens = result.output.split()
    assert len(tokens) == 3 == len(set(tokens))
    assert (tmp_path / "veil.sqlite3").exists()


def test_busy_port_is_one_line_error(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "veil.server", "--data", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("veil: cannot listen on")
    assert "Traceback" not in proc.stderr


def test_bad_config_is_one_line_error(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("colour = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "veil.server", "--data", str(tmp_path), "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 1 and "unknown config key 'colour'" in proc.stderr
    assert "Traceback" not in proc.stderr
