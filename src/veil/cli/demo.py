"""``veil demo``: the cryptographic core end to end, in one process, in one screen."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from veil.core import keys, safety, session

CONVERSATION: list[tuple[str, str]] = [
    ("alice", "Hi Bob! This is end-to-end encrypted, post-quantum from the first message."),
    ("bob", "Hi Alice. Our safety numbers match, I checked them in person."),
    ("alice", "Great. Every message gets a fresh key; old ones are gone for good."),
    ("alice", "And this one was sent before you answered the last."),
    ("bob", "Got both. The ratchet stepped forward when I replied."),
]


def run_demo() -> dict[str, object]:
    """Run the scripted conversation; returns what each side read and what the wire saw."""
    alice_id, bob_id = keys.IdentityKeyPair.generate(), keys.IdentityKeyPair.generate()
    alice_account, bob_account = b"alice-account-01", b"bob-account-0002"
    bob_prekeys = keys.PreKeys.generate(bob_id, one_time=10)
    # Alice fetches Bob's bundle from a directory: here, straight from his public half.
    bundle = keys.PreKeyBundle.from_bytes(bob_prekeys.bundle().to_bytes())
    alice, wire = session.initiate(alice_id, bundle, b"(session start)")
    bob, _ = session.respond(bob_id, bob_prekeys, wire)
    observed = [{"from": "alice", "bytes": len(wire), "kind": "prekey"}]
    read: list[dict[str, str]] = []
    sides = {"alice": (alice, bob, "bob"), "bob": (bob, alice, "alice")}
    for sender, text in CONVERSATION:
        mine, theirs, receiver = sides[sender]
        data = mine.encrypt(text.encode())
        observed.append({"from": sender, "bytes": len(data),
                         "kind": "prekey" if session.is_prekey_message(data) else "message"})
        read.append({"by": receiver, "text": theirs.decrypt(data).decode()})
    number = safety.safety_number(alice_id.public, alice_account, bob_id.public, bob_account)
    bobs_view = safety.safety_number(bob_id.public, bob_account, alice_id.public, alice_account)
    return {"safety_number": " ".join(number.groups()),
            "safety_numbers_match": number.digits == bobs_view.digits
            and number.matches(bobs_view.qr_payload),
            "read": read, "wire": observed}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def demo(as_json: bool) -> None:
    """Alice and Bob talk through Veil's cryptographic core, in-process."""
    result = run_demo()
    if as_json:
        click.echo(json.dumps(result))
        return
    console = Console()
    console.rule("[bold]Veil demo: PQXDH + Double Ratchet, in-process")
    table = Table("what the reader sees", "what a wire observer sees", show_lines=False)
    wire = result["wire"]
    read = result["read"]
    assert isinstance(wire, list) and isinstance(read, list)
    table.add_row("(session set up: PQXDH, X25519 + ML-KEM-768)",
                  f"{wire[0]['from']} → {wire[0]['bytes']} bytes ({wire[0]['kind']})")
    for seen, msg in zip(wire[1:], read, strict=True):
        table.add_row(f"[cyan]{msg['by']}[/] reads: {msg['text']}",
                      f"{seen['from']} → {seen['bytes']} bytes ({seen['kind']})")
    console.print(table)
    console.print(f"Safety number (both sides): [bold]{result['safety_number']}[/]")
    console.print("QR payloads cross-check: "
                  + ("[green]match[/]" if result["safety_numbers_match"] else "[red]MISMATCH[/]"))


COMMANDS = [demo]
