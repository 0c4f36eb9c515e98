"""The ``veil`` command line against a real server: scripts, JSON, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server.harness import ServerProcess

VEIL = [sys.executable, "-m", "veil.cli.main"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil-cli")) / "data").start()
    yield proc
    proc.stop()


def veil(home: Path, *args: str, passphrase: str = "pw", check: bool = True,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VEIL_HOME=str(home), VEIL_PASSPHRASE=passphrase)
    proc = subprocess.run([*VEIL, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def one_line_error(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert words in err.lower(), err


def test_conversation_from_the_command_line(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    veil(alice, "init", "--server", server.url, "--username", "alice_cli", "--json")
    made = lines(veil(bob, "init", "--server", server.url, "--username", "bob_cli", "--json"))
    assert made[0]["username"] == "bob_cli"
    me = lines(veil(bob, "id", "--json"))[0]
    assert me["account_id"] == made[0]["account_id"] and me["username"] == "bob_cli"
    sent = lines(veil(alice, "send", "@bob_cli", "hello from a script", "--json"))[0]
    assert sent["devices"] == 1
    got = lines(veil(bob, "recv", "--json"))
    assert [(m["text"], m["sender"]) for m in got] == [
        ("hello from a script", lines(veil(alice, "id", "--json"))[0]["account_id"])]
    assert {"id", "sender", "text", "timestamp"} <= set(got[0])
    assert lines(veil(bob, "recv", "--json")) == []            # acknowledged: gone
    ours = lines(veil(alice, "safety", "@bob_cli", "--json"))[0]
    theirs = lines(veil(bob, "safety", "@alice_cli", "--json"))[0]
    assert ours["safety_number"] == theirs["safety_number"] and not ours["verified"]
    assert lines(veil(alice, "verify", "@bob_cli", "--json"))[0]["verified"] is True
    assert lines(veil(alice, "safety", "@bob_cli", "--json"))[0]["verified"] is True
    text = veil(alice, "safety", "@bob_cli").stdout
    assert "▀" in text or "█" in text                         # the QR code
    conv = lines(veil(alice, "conversations", "--json"))
    assert conv[0]["username"] == "bob_cli" and conv[0]["verified"] is True


def test_recv_follow_streams_json(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "a", tmp_path / "b"
    veil(alice, "init", "--server", server.url)
    bob_id = lines(veil(bob, "init", "--server", server.url, "--json"))[0]["account_id"]
    env = dict(os.environ, VEIL_HOME=str(bob), VEIL_PASSPHRASE="pw")
    follow = subprocess.Popen([*VEIL, "recv", "--follow", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        veil(alice, "send", bob_id, "streamed")
        assert follow.stdout is not None
        line = follow.stdout.readline()
        assert json.loads(line)["text"] == "streamed"
    finally:
        follow.terminate()
        follow.wait(10)


def test_errors_are_one_clear_line(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "err"
    one_line_error(veil(home, "id", check=False), "veil init")
    one_line_error(veil(tmp_path / "x", "init", "--server", "http://127.0.0.1:9", check=False),
                   "cannot reach the server")
    veil(home, "init", "--server", server.url, passphrase="right")
    one_line_error(veil(home, "id", passphrase="wrong", check=False), "wrong passphrase")
    one_line_error(veil(home, "send", "@no_such_user", "x", passphrase="right", check=False),
                   "no user named")
    one_line_error(veil(home, "init", "--server", server.url, passphrase="right", check=False),
                   "already holds")
    (home / "veil.db").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (home / ("veil.db" + suffix)).unlink(missing_ok=True)
    one_line_error(veil(home, "id", passphrase="right", check=False), "unreadable")


def test_chat_sends_typed_lines_and_shows_history(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "ca", tmp_path / "cb"
    veil(alice, "init", "--server", server.url, "--username", "alice_chat")
    veil(bob, "init", "--server", server.url, "--username", "bob_chat")
    veil(bob, "send", "@alice_chat", "earlier message")
    veil(alice, "recv")
    env = dict(os.environ, VEIL_HOME=str(alice), VEIL_PASSPHRASE="pw")
    proc = subprocess.run([*VEIL, "chat", "@bob_chat"], input="first line\n\nsecond line\n",
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "earlier message" in proc.stdout                    # history shown on entry
    got = [m["text"] for m in lines(veil(bob, "recv", "--json"))
           if "event" not in m]                               # (receipts are events)
    assert got == ["first line", "second line"]                # the blank line is not sent


def test_the_trust_root_is_pinned_at_init_and_shown(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    started = (server.data_dir.parent / f"{server.data_dir.name}.out").read_text()
    fingerprint = started.split("trust root fingerprint ")[1].split()[0]
    assert f"--trust-root {fingerprint}" in started         # how to connect, printed
    one_line_error(veil(tmp_path / "mitm", "init", "--server", server.url, "--trust-root",
                        "0" * 32, check=False), "not the pinned")
    assert not (tmp_path / "mitm" / "veil.db").exists()
    one_line_error(veil(tmp_path / "typo", "init", "--server", server.url, "--trust-root",
                        "xyz", check=False), "32 hex digits")
    made = lines(veil(tmp_path / "ok", "init", "--server", server.url, "--trust-root",
                      fingerprint, "--json"))[0]
    assert made["trust_root"] == fingerprint and made["trust_root_pinned"] is True
    assert lines(veil(tmp_path / "ok", "id", "--json"))[0]["trust_root"] == fingerprint
    assert f"root     {fingerprint}" in veil(tmp_path / "ok", "id").stdout


def test_server_keys_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(veil(tmp_path, "server", "keys", "certify", "--root",
                        str(tmp_path / "missing.key"), "--data", str(tmp_path / "d"),
                        check=False), "cannot read the trust root")
    root = tmp_path / "root.key"
    veil(tmp_path, "server", "keys", "init-root", "--out", str(root))
    one_line_error(veil(tmp_path, "server", "keys", "init-root", "--out", str(root),
                        check=False), "refusing to overwrite")
    one_line_error(veil(tmp_path, "server", "keys", "move-root", "--data", str(tmp_path),
                        "--out", str(tmp_path / "x.key"), check=False), "no trust root")
