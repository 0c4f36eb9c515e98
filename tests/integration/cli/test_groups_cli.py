"""Groups from the command line (issue 11 §3), against a real server: create with
members, send to '#name', receive with the group named, rename, admins only, remove."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.integration.cli.test_cli import lines, veil
from tests.integration.server.harness import ServerProcess
from veil.server.storage import DATABASE_FILE


def test_a_group_of_three_from_the_command_line(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob, carol = (tmp_path / n for n in ("alice", "bob", "carol"))
        for home, name in ((alice, "alice_gc"), (bob, "bob_gc"), (carol, "carol_gc")):
            veil(home, "init", "--server", server.url, "--username", name)
        made = lines(veil(alice, "group", "create", "team", "--member", "@bob_gc",
                          "--member", "@carol_gc", "--json"))[0]
        assert made["name"] == "team" and made["am_admin"] and len(made["members"]) == 3
        for home in (bob, carol):
            veil(home, "recv")                               # the Welcome arrives
            assert "#team" in veil(home, "group", "list").stdout
        sent = veil(alice, "send", "#team", "hello team").stdout
        assert sent.startswith("sent to #team")
        assert "#team @alice_gc: hello team" in veil(bob, "recv").stdout
        carol_id = lines(veil(carol, "id", "--json"))[0]["account_id"]
        veil(carol, "send", "#team", "hi from carol")
        got = lines(veil(bob, "recv", "--json"))
        # Bob never talked to Carol 1:1: her @username comes from the server-signed
        # sender certificate inside the group message.
        assert [(m["group"], m["sender"], m["sender_username"], m["text"]) for m in got] \
            == [(made["id"], carol_id, "carol_gc", "hi from carol")]
        members = lines(veil(bob, "group", "members", "#team", "--json"))
        ids = {n: lines(veil(h, "id", "--json"))[0]["account_id"]
               for n, h in (("alice", alice), ("bob", bob), ("carol", carol))}
        assert sorted(m["account_id"] for m in members) == sorted(ids.values())
        assert [m["account_id"] for m in members if m["admin"]] == [ids["alice"]]
        refused = veil(bob, "group", "remove", "#team", "@carol_gc", check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "renamed to #crew" in veil(alice, "group", "rename", "#team", "crew").stdout
        veil(alice, "group", "remove", "#crew", "@carol_gc")
        veil(carol, "recv")
        gone = veil(carol, "send", made["id"], "still here?", check=False)
        assert gone.returncode == 1 and "Traceback" not in gone.stderr
        veil(bob, "recv")
        assert "#crew" in veil(bob, "group", "list").stdout
    finally:
        server.stop()


def _mailbox(server: ServerProcess, gid: str) -> list[tuple[int, bool]]:
    """(seq, is_commit) of what the server holds for the group, oldest first."""
    conn = sqlite3.connect(server.data_dir / DATABASE_FILE, timeout=10)
    try:
        return [(int(s), bool(c)) for s, c in conn.execute(
            "SELECT seq, is_commit FROM group_messages WHERE group_id = ? ORDER BY seq",
            (bytes.fromhex(gid),))]
    finally:
        conn.close()


def _drop(server: ServerProcess, gid: str, seq: int) -> None:
    conn = sqlite3.connect(server.data_dir / DATABASE_FILE, timeout=10)
    try:
        with conn:
            conn.execute("DELETE FROM group_messages WHERE group_id = ? AND seq = ?",
                         (bytes.fromhex(gid), seq))
    finally:
        conn.close()


def test_recv_warns_of_a_dropped_message_and_a_withheld_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server (its database edited) drops one of alice's group messages, then the
    commit that ends bob's epoch: ``veil recv`` shows the messages and warns, in
    English and in Chinese, on standard error; ``--json`` gives the warning as an
    object."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        veil(alice, "init", "--server", server.url, "--username", "alice_gw")
        veil(bob, "init", "--server", server.url, "--username", "bob_gw")
        made = lines(veil(alice, "group", "create", "team", "--member", "@bob_gw",
                          "--json"))[0]
        veil(bob, "recv")
        for text in ("one", "two", "three"):
            veil(alice, "send", "#team", text)
        *_, (second, _), _ = _mailbox(server, made["id"])
        _drop(server, made["id"], second)
        got = veil(bob, "recv")
        assert "#team @alice_gw: one" in got.stdout and "two" not in got.stdout
        assert "#team @alice_gw: three" in got.stdout
        said = " ".join(got.stderr.split())          # (rich wraps long lines)
        assert "#team: 1 message from @alice_gw did not arrive" in said
        veil(alice, "send", "#team", "four")
        veil(alice, "send", "#team", "five")
        *_, (fourth, _), _ = _mailbox(server, made["id"])
        _drop(server, made["id"], fourth)
        monkeypatch.setenv("VEIL_LANG", "zh")
        got = veil(bob, "recv")
        assert "#team：来自 @alice_gw 的 1 条消息未送达" in " ".join(got.stderr.split())
        monkeypatch.setenv("VEIL_LANG", "en")
        veil(alice, "group", "rename", "#team", "crew")
        veil(alice, "send", "#crew", "in the next epoch")
        ((commit, _),) = [row for row in _mailbox(server, made["id"]) if row[1]][-1:]
        _drop(server, made["id"], commit)
        objects = lines(veil(bob, "recv", "--json"))
        assert [g["reason"] for g in objects if g.get("event") == "group_stalled"] == [
            "commit_withheld"]
        assert not [g for g in objects if "text" in g]
        again = veil(bob, "recv")                    # told once
        assert "withholds" not in again.stderr
    finally:
        server.stop()
