"""``veil demo``: a throw-away server in-process, Alice and Bob, and the server's view.

It registers two identities, has Alice write while Bob is offline, lets Bob come online
and answer (with sealed sender, once he has learned Alice's profile key), and prints
side by side what each person read and what the server stored at the time: rows
without a sender column whose bodies are ciphertext of padded sizes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from veil.cli.i18n import t
from veil.client import Client
from veil.client.store import FAST
from veil.server.config import load_config
from veil.server.storage import DATABASE_FILE

# (sender, text, does the recipient read right after?)
SCRIPT: list[tuple[str, str, bool]] = [
    ("alice", t("demo.script.1"), False),
    ("alice", t("demo.script.2"), True),
    ("bob", t("demo.script.3"), True),
    ("alice", t("demo.script.4"), True),
]


def _server_rows(db_path: Path) -> list[dict[str, Any]]:
    """What the server holds right now, read straight from its SQLite file."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(envelopes)")]
        rows = db.execute("SELECT account_id, device_id, length(body), substr(body, 1, 12) "
                          "FROM envelopes ORDER BY id").fetchall()
    finally:
        db.close()
    return [{"recipient": acct.hex()[:8] + "…", "device": dev, "bytes": size,
             "body_starts": head.hex() + "…", "columns": columns}
            for acct, dev, size, head in rows]


async def run_demo(workdir: Path) -> dict[str, Any]:
    # Imported here: the server (aiohttp's web side, the admin listener, prometheus)
    # costs every other ``veil`` command a third of a second of start-up otherwise.
    from veil.server.runner import start

    config = load_config(None, data_dir=workdir / "server", port=0, log_to_file=False)
    server = await start(config)
    url = f"http://127.0.0.1:{server.port}"
    people: dict[str, Client] = {}
    try:
        for name in ("alice", "bob"):
            people[name] = await Client.register(workdir / name, url, username=f"{name}_demo",
                                                 passphrase=f"{name} demo passphrase", kdf=FAST)
        alice, bob = people["alice"], people["bob"]
        steps: list[dict[str, Any]] = []
        for sender, text, online in SCRIPT:
            me, other = (alice, bob) if sender == "alice" else (bob, alice)
            sent = await me.send(other.account, text)
            stored = _server_rows(config.data_dir / DATABASE_FILE)
            received = await other.receive_pending() if online else []
            steps.append({"from": sender, "sealed": sent.sealed, "server_stored": stored,
                          "read": [m.text for m in received]})
        number = await alice.safety_number(bob.account)
        bobs = await bob.safety_number(alice.account)
        return {"server": url, "steps": steps,
                "safety_number": " ".join(number.groups()),
                "safety_numbers_match": number.digits == bobs.digits
                and number.matches(bobs.qr_payload),
                "accounts": {n: c.account for n, c in people.items()}}
    finally:
        for client in people.values():
            await client.close()
        await server.close()


def _render(result: dict[str, Any]) -> None:
    console = Console()
    console.rule(f"[bold]{t('demo.title')}")
    console.print(t("demo.who", server=result["server"], alice=result["accounts"]["alice"],
                    bob=result["accounts"]["bob"]))
    table = Table(t("demo.col_sender"), t("demo.col_read"), t("demo.col_stored"),
                  show_lines=True)
    for step in result["steps"]:
        rows = "\n".join(t("demo.stored_row", recipient=r["recipient"], device=r["device"],
                           size=r["bytes"], start=r["body_starts"])
                         for r in step["server_stored"]) or t("demo.nothing")
        read = "\n".join(step["read"]) or t("demo.nothing_read")
        sealed = t("demo.sealed") if step["sealed"] else ""
        table.add_row(step["from"] + sealed, read, rows)
    console.print(table)
    columns: list[str] = next(
        (r["columns"] for s in result["steps"] for r in s["server_stored"]), [])
    console.print(t("demo.columns", columns=", ".join(columns)))
    console.print(t("demo.safety_number", number=f"[bold]{result['safety_number']}[/]")
                  + "  " + (f"[green]{t('demo.match')}[/]" if result["safety_numbers_match"]
                           else f"[red]{t('demo.mismatch')}[/]"))


@click.command(help=t("cmd.demo"))
@click.option("--json", "as_json", is_flag=True, help=t("opt.demo.json"))
def demo(as_json: bool) -> None:
    """Alice and Bob talk through a throw-away Veil server started in-process."""
    with tempfile.TemporaryDirectory(prefix="veil-demo-") as tmp:
        result = asyncio.run(run_demo(Path(tmp)))
    if as_json:
        click.echo(json.dumps(result))
    else:
        _render(result)


COMMANDS = [demo]

__all__ = [
    "COMMANDS",
    "demo",
    "run_demo",
]
