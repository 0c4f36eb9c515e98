"""Replies, reactions, edits, deletions, receipts and disappearing timers from the
command line (issue 12 §2, §3), between two homes, with the real ``veil`` console
script against a real server process; one run in Chinese (``LANG=zh_CN.UTF-8``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli.test_files_cli import objects, run, two_people
from tests.integration.server.harness import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.stop()


def _events(proc: object) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for o in objects(proc):  # type: ignore[arg-type]
        out.setdefault(str(o.get("event", "message")), []).append(o)
    return out


def test_react_reply_edit_delete_and_timer_between_two_homes(
        server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "cv")
    sent = objects(run(alice, "send", "@bob_cv", "lunch at noon?", "--json"))[0]
    mid = sent["id"]
    [got] = objects(run(bob, "recv", "--json"))
    assert got["id"] == mid and got["kind"] == "text"
    # History shows the short id; 8 hex digits are enough to name the message.
    history = run(bob, "history", "@alice_cv").stdout
    assert f"{mid[:8]} @alice_cv: lunch at noon?" in history
    assert run(bob, "react", "@alice_cv", mid[:8], "👍").stdout.strip() == \
        f"reacted 👍 to {mid[:8]}"
    replied = objects(run(bob, "reply", "@alice_cv", mid[:10], "yes!", "--json"))[0]
    assert replied["status"] == "sent" and replied["reply_to"] == mid
    seen = run(alice, "recv")
    assert f"· @bob_cv reacted 👍 to {mid[:8]}" in seen.stdout
    assert f"↪ reply to {mid[:8]} “lunch at noon?”" in seen.stdout
    assert f"· {mid[:8]} read by @bob_cv" in seen.stdout        # bob's recv read it
    mine = [o for o in objects(run(alice, "history", "@bob_cv", "--json")) if o["id"] == mid]
    assert mine[0]["reactions"] and list(mine[0]["reactions"].values()) == ["👍"]
    assert "read" in next(iter(mine[0]["receipts"].values()))
    assert "✓✓ read" in run(alice, "history", "@bob_cv").stdout
    # Edit and timer from alice; bob sees short notice lines, then the new state.
    assert run(alice, "edit", "@bob_cv", mid[:8], "lunch at one?").stdout.strip() == \
        f"edited {mid[:8]}"
    assert run(alice, "timer", "@bob_cv", "1h").stdout.strip() == \
        "messages now disappear after 1 hour"
    notices = _events(run(bob, "recv", "--json"))
    assert [(e["message_id"], e["text"]) for e in notices["edited"]] == [(mid, "lunch at one?")]
    assert [e["seconds"] for e in notices["timer"]] == [3600]
    assert run(bob, "timer", "@alice_cv").stdout.strip() == "messages disappear after 1 hour"
    later = objects(run(alice, "send", "@bob_cv", "this one disappears", "--json"))[0]
    [arrived] = [o for o in objects(run(bob, "recv", "--json")) if o.get("id") == later["id"]]
    assert arrived["expires_at"] is not None
    shown = run(bob, "history", "@alice_cv").stdout
    assert "lunch at one? (edited)" in shown
    assert "@alice_cv set messages to disappear after 1 hour" in shown
    assert "this one disappears ⏱" in shown
    # Bob takes his reaction back; alice deletes her message for everyone.
    run(bob, "react", "@alice_cv", mid[:8], "--remove")
    assert run(alice, "delete", "@bob_cv", mid[:8], "--for-everyone").stdout.strip() == \
        f"deleted {mid[:8]} for everyone"
    assert "took back their reaction" in run(alice, "recv").stdout
    assert f"@alice_cv deleted {mid[:8]} for everyone" in run(bob, "recv").stdout
    [gone] = [o for o in objects(run(bob, "history", "@alice_cv", "--json")) if o["id"] == mid]
    assert gone["deleted"] and gone["text"] == "" and not gone["reactions"]
    assert f"{mid[:8]} @alice_cv: (deleted)" in run(bob, "history", "@alice_cv").stdout
    # Delete for me: gone from bob's device only.
    run(bob, "delete", "@alice_cv", later["id"][:8])
    assert later["id"] not in run(bob, "history", "@alice_cv", "--json").stdout
    assert later["id"] in run(alice, "history", "@bob_cv", "--json").stdout
    assert run(alice, "timer", "@bob_cv", "off").stdout.strip() == \
        "disappearing messages are now off"


def test_read_receipts_off_and_bad_input_are_one_line(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "rr")
    assert run(bob, "receipts", "@alice_rr", "off").stdout.strip() == \
        "read receipts with @alice_rr are off: you send none and see none"
    sent = objects(run(alice, "send", "@bob_rr", "did you read this?", "--json"))[0]
    run(bob, "recv")
    notices = run(alice, "recv").stdout
    assert f"{sent['id'][:8]} delivered to @bob_rr" in notices
    assert f"{sent['id'][:8]} read by" not in notices      # none sent
    for args, code, words in (
            (("react", "@alice_rr", "xyz", "👍"), 2, "is not a message id"),
            (("react", "@alice_rr", "0" * 8, "👍"), 1, "no message of that conversation"),
            (("react", "@alice_rr", sent["id"][:8]), 2, "give one emoji"),
            (("timer", "@alice_rr", "soon"), 2, "is not a timer"),
            (("timer", "@alice_rr", "5s"), 1, "30 s to four weeks"),
            (("edit", "@alice_rr", sent["id"][:8], "not mine"), 1, "your own messages"),
            (("receipts", "#nogroup", "on"), 1, "nogroup")):
        proc = run(bob, *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert words in proc.stderr.lower(), (args, proc.stderr)
    as_json = run(bob, "timer", "@alice_rr", "5s", "--json", check=False)
    assert as_json.returncode == 1 and '"error"' in as_json.stderr


def test_a_conversation_in_chinese(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = two_people(tmp_path, server.url, "zh")

    def run_zh(home: Path, *args: str) -> str:
        """As a shell with LANG=zh_CN.UTF-8 runs it (an empty variable is not set)."""
        return run(home, *args, VEIL_LANG="", LC_ALL="", LC_MESSAGES="",
                   LANG="zh_CN.UTF-8").stdout
    assert run_zh(alice, "timer", "@bob_zh", "1d").strip() == "消息现在会在 1 天 后消失"
    assert "@alice_zh 把消息设为 1 天 后消失" in run_zh(bob, "recv")
    mid = objects(run(alice, "send", "@bob_zh", "你好", "--json"))[0]["id"]
    run(bob, "recv")
    assert run_zh(bob, "react", "@alice_zh", mid[:8], "🎉").strip() == f"已对 {mid[:8]} 回应 🎉"
    assert f"@bob_zh 对 {mid[:8]} 回应了 🎉" in run_zh(alice, "recv")
    assert "限时" in run_zh(alice, "history", "@bob_zh")
