"""A copied home is detected, never silently broken (issue 10 §2).

A copy of ``~/.veil`` (a backup restored beside the original, or the obvious "second
device" workaround) holds the same device keys and ratchet states as the original:
both copies encrypt different messages under the same message keys, and each contact
silently drops whichever arrives second as a duplicate. So a home remembers where it
was made — a digest of the machine's id, the home's real path and the store file's
device and inode numbers, kept inside the encrypted store — and opening it anywhere
else is refused with :class:`HomeCopied`, which says what happened and what to do:
``veil adopt`` when the original is gone (a restored backup, a moved folder), or a new
registration for another machine. Homes from before this check learn their place on
first open.

What it cannot see: a copy made back onto the same path and file (restoring the very
file in place over a deleted original keeps neither the inode nor, usually, the
device, so that case is caught too, but a block-level clone of a whole disk is not).
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from veil.client.errors import ClientError
from veil.client.store import DB_FILE, Store

__all__ = ["HomeCopied", "check", "place", "record"]

_KEY = ("self", "place")


class HomeCopied(ClientError):
    code = "home_copied"


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text
    return socket.gethostname()


def place(home: Path) -> bytes:
    """Where ``home`` is: machine, real path, and the store file's identity."""
    info = os.stat(home / DB_FILE)
    data = "\x00".join((_machine_id(), str(home.resolve()), str(info.st_dev),
                        str(info.st_ino)))
    return hashlib.sha256(b"veil home place v1\x00" + data.encode()).digest()


def record(store: Store, home: Path) -> None:
    store.put(*_KEY, place(home))


def check(store: Store, home: Path) -> None:
    """Refuse a home that is not where it was made (first open: remember the place)."""
    here, known = place(home), store.get(*_KEY)
    if known is None:
        record(store, home)
    elif known != here:
        raise HomeCopied(
            f"{home} is a copy of a Veil home made elsewhere (another folder, file or "
            "machine): two copies of one device make messages that contacts silently "
            "drop. If the original is gone (a restored backup, a moved folder), run "
            "'veil adopt' to use this one; for another machine, register a new device "
            "there with 'veil init'")
