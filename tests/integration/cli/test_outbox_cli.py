"""The outbox from the command line (issue 10 §1), against a real server process that
goes away and comes back: nothing typed is lost, and nothing is shown twice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.cli.test_cli import VEIL, lines, veil
from tests.integration.server.harness import ServerProcess


def test_messages_typed_while_the_server_is_down_are_sent_later_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_ob")
        veil(bob, "init", "--server", server.url, "--username", "bob_ob")
        veil(alice, "send", "@bob_ob", "before")
        port = server.port
        server.stop()
        queued = lines(veil(alice, "send", "@bob_ob", "while it was down", "--json"))[0]
        assert queued["status"] == "queued" and "cannot reach" in queued["reason"]
        piped = subprocess.run([*VEIL, "send", "@bob_ob", "-", "--json"], input="line one\n"
                               "line two", capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, VEIL_HOME=str(alice),
                                        VEIL_PASSPHRASE="pw"))
        assert piped.returncode == 0 and lines(piped)[0]["status"] == "queued", piped.stderr
        (tmp_path / "note.txt").write_text("from a file", encoding="utf-8")
        veil(alice, "send", "@bob_ob", "--text-file", str(tmp_path / "note.txt"))
        human = veil(alice, "outbox")
        assert "while it was down" in human.stdout and human.stdout.count("server_unreachable") == 3
        waiting = lines(veil(alice, "outbox", "--json"))
        assert [m["text"] for m in waiting] == ["while it was down", "line one\nline two",
                                                "from a file"]
        server.start()
        assert server.port == port, "the port was taken meanwhile"
        sent = lines(veil(alice, "outbox", "--retry", "--json"))
        assert [m["status"] for m in sent] == ["sent"] * 3
        assert veil(alice, "outbox").stdout.strip() == "the outbox is empty"
        got = [m["text"] for m in lines(veil(bob, "recv", "--json"))]
        assert got == ["before", "while it was down", "line one\nline two", "from a file"]
        # Multi-line text is shown as lines (indented), not as an escape.
        veil(alice, "send", "@bob_ob", "first\nsecond")
        shown = veil(bob, "recv").stdout
        assert "first\n    second" in shown and "\\x0a" not in shown
    finally:
        server.stop()


def test_a_queued_message_is_sent_by_the_next_command_that_connects(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_nx")
        bob_id = lines(veil(bob, "init", "--server", server.url, "--json"))[0]["account_id"]
        veil(alice, "send", bob_id, "hello")
        server.stop()
        assert lines(veil(alice, "send", bob_id, "queued one", "--json"))[0]["status"] == \
            "queued"
        server.start()
        assert server.port
        veil(alice, "recv")                    # any command that connects sends it
        assert lines(veil(alice, "outbox", "--json")) == []
        assert [m["text"] for m in lines(veil(bob, "recv", "--json"))] == ["hello",
                                                                           "queued one"]
    finally:
        server.stop()


def test_chat_refuses_a_line_that_is_too_long_and_goes_on(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url)
        bob_id = lines(veil(bob, "init", "--server", server.url, "--json"))[0]["account_id"]
        chat = subprocess.run([*VEIL, "chat", bob_id], input="x" * 70_000 + "\nstill here\n",
                              capture_output=True, text=True, timeout=90,
                              env=dict(os.environ, VEIL_HOME=str(alice), VEIL_PASSPHRASE="pw"))
        assert chat.returncode == 0, chat.stderr
        assert "Traceback" not in chat.stderr + chat.stdout
        assert "not sent" in chat.stdout and "65536 bytes" in chat.stdout
        assert [m["text"] for m in lines(veil(bob, "recv", "--json"))] == ["still here"]
    finally:
        server.stop()
