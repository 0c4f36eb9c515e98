"""Groups from the command line (issue 11 §3), against a real server: create with
members, send to '#name', receive with the group named, rename, admins only, remove."""

from __future__ import annotations

from pathlib import Path

from tests.integration.cli.test_cli import lines, veil
from tests.integration.server.harness import ServerProcess


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
