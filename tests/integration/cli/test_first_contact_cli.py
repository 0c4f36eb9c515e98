"""First contact from the command line (issue 10 §3 and §4), against a real server: the
first message shows the sender's @username; a first message without a key of the
recipient's says what the server learned; `veil id` hands out a contact link with which
even the first message is sealed; and `veil contact add` keeps a contact from it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.cli.test_cli import VEIL, lines, veil
from tests.integration.server.harness import ServerProcess


def test_first_contact_names_the_sender_and_says_what_the_server_saw(
        tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_fc")
        veil(bob, "init", "--server", server.url, "--username", "bob_fc")
        first = veil(alice, "send", "@bob_fc", "hello").stdout
        assert "not sealed" in first and "the server saw that you wrote to @bob_fc" in first
        shown = veil(bob, "recv").stdout
        assert "@alice_fc: hello" in shown             # not the account id
        reply = veil(bob, "send", "@alice_fc", "hi back").stdout
        assert "sealed sender" in reply and "not sealed" not in reply
    finally:
        server.stop()


def test_a_contact_link_makes_the_first_message_sealed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
        veil(alice, "init", "--server", server.url, "--username", "alice_ln")
        veil(bob, "init", "--server", server.url, "--username", "bob_ln")
        veil(carol, "init", "--server", server.url)
        human = veil(bob, "id", "--qr").stdout
        assert "link     veil:" in human and "contact link" in human
        assert "█" in human or "▀" in human or "▄" in human      # the QR code
        link = lines(veil(bob, "id", "--json"))[0]["contact_link"]
        assert link in human
        sent = veil(alice, "send", link, "sealed from the start").stdout
        assert sent.startswith("sent to @bob_ln (1 device, sealed sender")
        assert "not sealed" not in sent
        added = lines(veil(carol, "contact", "add", link, "--json"))[0]
        assert added["username"] == "bob_ln" and added["sealed"] is True
        assert "sealed sender" in veil(carol, "send", "@bob_ln", "me too").stdout
        got = [(m["sender_username"], m["text"]) for m in lines(veil(bob, "recv", "--json"))]
        assert got == [("alice_ln", "sealed from the start"), (None, "me too")]
        damaged = subprocess.run([*VEIL, "contact", "add", link[:-12]], capture_output=True,
                                 text=True, timeout=60,
                                 env=dict(os.environ, VEIL_HOME=str(carol),
                                          VEIL_PASSPHRASE="pw"))
        assert damaged.returncode == 1 and "Traceback" not in damaged.stderr
        assert damaged.stderr.strip().splitlines() == [
            "veil: this contact link is damaged or from a newer Veil; ask for it again"]
    finally:
        server.stop()


def test_chat_says_who_it_is_with(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_ch")
        veil(bob, "init", "--server", server.url, "--username", "bob_ch")
        link = lines(veil(bob, "id", "--json"))[0]["contact_link"]
        chat = subprocess.run([*VEIL, "chat", link], input="hello\n", capture_output=True,
                              text=True, timeout=60,
                              env=dict(os.environ, VEIL_HOME=str(alice), VEIL_PASSPHRASE="pw"))
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.splitlines()[0] == (
            "chat with @bob_ch: type a line and press Enter to send it; Ctrl-D leaves")
        assert [m["text"] for m in lines(veil(bob, "recv", "--json"))] == ["hello"]
    finally:
        server.stop()
