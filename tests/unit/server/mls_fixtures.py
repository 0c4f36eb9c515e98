"""Real MLS groups, KeyPackages, commits and capabilities for the Delivery Service tests.

Members use private handshakes (the server refuses PublicMessages). A committer learns
the next epoch's capabilities only after merging its commit; :func:`stage_commit` keeps
the state from before it, so a loser of an epoch conflict can go back (``rollback``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from veil.core.mls import Credential, Group, KeyPackageBundle
from veil.core.mls.group import SavedGroup

READ = b"veil ds read"
WRITE = b"veil ds write"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_cap(group: Group) -> bytes:
    return group.export_secret(READ, b"", 32)


def write_cap(group: Group) -> bytes:
    return group.export_secret(WRITE, b"", 32)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def new_group(name: bytes, now: int) -> Group:
    return Group.create(1, Credential.basic(name), now=now, private_handshakes=True)


def key_package(name: bytes, now: int, lifetime_s: int = 90 * 24 * 3600) -> KeyPackageBundle:
    return Group.key_package(1, Credential.basic(name), now=now, lifetime_seconds=lifetime_s)


def join(welcome: bytes, bundle: KeyPackageBundle, now: int) -> Group:
    return Group.join(welcome, bundle, now=now, private_handshakes=True)


def bad_signature(kp: bytes) -> bytes:
    """The KeyPackage with the last byte of its signature (its last field) flipped."""
    return kp[:-1] + bytes([kp[-1] ^ 1])


@dataclass
class Staged:
    epoch: int  # the epoch the commit ends
    commit: bytes
    welcome: bytes | None
    next_read: bytes  # capabilities of the next epoch
    next_write: bytes
    before: SavedGroup

    def body(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "message": b64(self.commit),
                "next_read_verifier": b64(sha(self.next_read)),
                "next_write_verifier": b64(sha(self.next_write))}


def stage_commit(group: Group, now: int, **changes: Any) -> Staged:
    """Commit ``changes`` (add=[kp bytes], remove=[leaf]) and merge it at once, keeping
    the state before it; returns what the Delivery Service needs."""
    before = group.save()
    epoch = group.epoch
    out = group.commit(now=now, **changes)
    group.merge_pending_commit()
    return Staged(epoch, out.commit, out.welcome, read_cap(group), write_cap(group), before)


def rollback(staged: Staged) -> Group:
    return Group.restore(staged.before)
