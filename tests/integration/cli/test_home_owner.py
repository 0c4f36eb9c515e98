"""One owner per home (issue 10 §2): while one program (here ``veil recv -f``) has a
home open, a second ``veil`` on the same home is refused with a line that names the
owner, instead of splitting incoming messages with it; once the owner exits (even by
SIGKILL) the home is free again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.cli.test_cli import VEIL, lines, one_line_error, veil
from tests.integration.server.harness import ServerProcess


def _wait_for_owner(home: Path, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((home / "lock").read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("the long-running command never took the home")


def test_a_second_program_on_a_home_in_use_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    follower = None
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url)
        bob_id = lines(veil(bob, "init", "--server", server.url, "--json"))[0]["account_id"]
        follower = subprocess.Popen([*VEIL, "recv", "--follow", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True,
                                    env=dict(os.environ, VEIL_HOME=str(bob),
                                             VEIL_PASSPHRASE="pw"))
        _wait_for_owner(bob, follower.pid)
        second = veil(bob, "recv", check=False)
        one_line_error(second, "in use by 'veil recv'")
        assert str(follower.pid) in second.stderr
        # The owner keeps receiving everything.
        veil(alice, "send", bob_id, "to the one owner")
        line = follower.stdout.readline() if follower.stdout else ""
        assert json.loads(line)["text"] == "to the one owner"
        follower.send_signal(signal.SIGKILL)
        follower.wait(10)
        assert lines(veil(bob, "recv", "--json")) == []      # free again, nothing left
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
        server.stop()
