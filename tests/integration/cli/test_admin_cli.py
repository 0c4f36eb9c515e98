"""``veil admin`` against a real server process (issue 13 §4): it finds the server from
its data directory (``--data`` before or after the sub-command), ``--json`` everywhere,
status / alerts / blocks / lift / deny / allow / reload / invites / audit verify and
export; a stopped server is one clear line, and ``audit verify`` then checks the data
directory itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.cli.test_cli import VEIL, one_line_error
from tests.integration.server.admin_helpers import ATTACKER, admin_of, scan_routes
from tests.integration.server.harness import ServerProcess
from veil.cli.main import cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(Path(tmp_path_factory.mktemp("veil-admin")) / "data").start()
    admin_of(proc)  # its admin listener is up
    yield proc
    proc.stop()


def admin(*args: str, check: bool = True, lang: str = "en"
          ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VEIL_LANG=lang)
    proc = subprocess.run([*VEIL, "admin", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def answer(proc: subprocess.CompletedProcess[str]) -> Any:
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_status_with_data_before_or_after_the_sub_command(server: ServerProcess) -> None:
    data = str(server.data_dir)
    ref = admin_of(server)
    before = answer(admin("--data", data, "status", "--json"))
    after = answer(admin("status", "--data", data, "--json"))
    group_json = answer(admin("--json", "--data", data, "status"))
    for status in (before, after, group_json):
        assert status["admin_url"] == ref.url and status["listener_url"] == server.url
        assert status["registration"] == "open"
    text = admin("--data", data, "status").stdout
    assert f"admin listener: {ref.url}" in text and "registration: open" in text


def test_an_attack_then_blocks_alerts_and_lift(server: ServerProcess) -> None:
    data = str(server.data_dir)
    asyncio.run(scan_routes(server.url))

    def blocks() -> list[dict[str, Any]]:
        return [b for b in answer(admin("blocks", "--data", data, "--json"))["blocks"]
                if b["rule"] == "route_scan"]

    found = blocks()
    assert found, "the route scan was blocked at once (the rule fires on the 30th request)"
    assert found[0]["id"] in admin("blocks", "--data", data).stdout
    assert ATTACKER not in admin("blocks", "--data", data).stdout
    alerts = answer(admin("alerts", "--data", data, "--json"))
    assert any(a["rule"] == "route_scan" for a in alerts["alerts"])
    assert "route_scan" in admin("alerts", "--data", data).stdout
    lifted = admin("lift", found[0]["id"], "--data", data)
    assert f"lifted block {found[0]['id']}" in lifted.stdout
    assert blocks() == []
    again = admin("lift", found[0]["id"], "--data", data, "--json", check=False)
    assert again.returncode == 1
    assert json.loads(again.stderr)["error"]["code"] == "block_not_found"
    one_line_error(admin("lift", found[0]["id"], "--data", data, check=False),
                   "no block in force")


def test_deny_allow_reload_and_invites(server: ServerProcess) -> None:
    data = str(server.data_dir)
    assert "denied 192.0.2.0/24" in admin("--data", data, "deny", "192.0.2.7/24").stdout
    assert answer(admin("--data", data, "deny", "--json"))["rules"] == ["192.0.2.0/24"]
    assert "removed the deny rule" in admin("--data", data, "allow", "192.0.2.0/24").stdout
    assert "no runtime deny rule" in admin("--data", data, "allow", "192.0.2.0/24").stdout
    one_line_error(admin("--data", data, "deny", "nonsense", check=False), "cidr")
    assert answer(admin("--data", data, "reload", "--json"))["reloaded"] is True
    tokens = admin("--data", data, "invites", "--count", "2", "--hours", "1").stdout.split()
    assert len(set(tokens)) == 2 and all(len(t) == 36 for t in tokens)
    made = answer(admin("invites", "--count", "3", "--data", data, "--json"))
    assert len(made["invites"]) == 3


def test_the_audit_log_verifies_and_exports(server: ServerProcess) -> None:
    data = str(server.data_dir)
    admin("--data", data, "invites", "--count", "1")  # an admin action is recorded
    verified = admin("--data", data, "audit", "verify")
    assert "audit log intact" in verified.stdout
    report = answer(admin("audit", "verify", "--data", data, "--json"))["report"]
    assert report["ok"] is True and report["records"] >= 1
    rows = [json.loads(line) for line in
            admin("audit", "export", "--data", data).stdout.splitlines()]
    assert any(row["kind"] == "admin.invites" for row in rows)
    assert all({"seq", "hash", "prev_hash", "kind"} <= set(row) for row in rows)
    later = admin("--data", data, "audit", "export", "--after", str(rows[-1]["seq"]))
    assert later.stdout.strip() == "" or all(
        json.loads(line)["seq"] > rows[-1]["seq"] for line in later.stdout.splitlines())


def test_a_stopped_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    admin_of(server)
    admin("--data", str(server.data_dir), "invites", "--count", "1")
    server.stop()
    data = str(server.data_dir)
    for command in (["status"], ["blocks", "--json"]):
        proc = admin("--data", data, *command, check=False)
        assert proc.returncode == 1
        if "--json" in command:
            assert json.loads(proc.stderr)["error"]["code"] == "server_not_running"
        else:
            one_line_error(proc, "no running server found")
    zh = admin("--data", data, "status", check=False, lang="zh")
    one_line_error(zh, "没有找到")
    # audit verify reads the data directory itself.
    offline = answer(admin("--data", data, "audit", "verify", "--json"))
    assert offline["offline"] is True and offline["report"]["ok"] is True
    assert "audit log intact" in admin("audit", "verify", "--data", data).stdout
    # Nowhere near a server at all.
    one_line_error(admin("--data", str(tmp_path / "nothing"), "status", check=False),
                   "no running server found")


def test_help_in_both_languages() -> None:
    runner = CliRunner()
    assert "admin listener" in runner.invoke(cli, ["admin", "--help"]).output
    for sub in ("status", "alerts", "blocks", "lift", "deny", "allow", "reload", "invites",
                "audit"):
        result = runner.invoke(cli, ["admin", sub, "--help"])
        assert result.exit_code == 0 and "--data" in result.output, sub
    assert "管理端" in admin("--help", lang="zh").stdout
