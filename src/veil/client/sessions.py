"""Every session the client holds with one remote device: the current one and a few
archived ones (as libsignal keeps "previous session states").

Two people who write to each other for the first time at the same moment each start a
session as initiator and each receive the other's initial message. Replacing the one
with the other would make every later message fail on one side; keeping the older
session archived lets either be used until both sides settle on one (the one that last
decrypted something becomes current).

A stored session that cannot be read — state version 1 from before the outside review
(issue 8), or a damaged record — counts as absent: the next message sets up a new
session (PQXDH), so neither sending nor receiving stops on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from veil.client.errors import CorruptStore
from veil.client.store import Store
from veil.core import keys, session
from veil.core.encoding import Reader, Writer
from veil.core.errors import CoreError, DuplicateMessage, MalformedMessage
from veil.core.prekeys import PreKeys

log = logging.getLogger("veil.client")

MAX_ARCHIVED = 4
_KIND = "sessions"


def _name(account: str, device: int) -> str:
    return f"{account}.{device}"


def load(store: Store, account: str, device: int) -> list[session.Session]:
    """Current session first; empty when there is none (or none that can be read)."""
    try:
        raw = store.get(_KIND, _name(account, device))
    except CorruptStore:
        log.warning("a stored session record is damaged; a new session will be set up")
        return []
    if raw is None:
        return []
    found: list[session.Session] = []
    try:
        r = Reader(raw, "stored sessions")
        blobs = [r.var(1 << 20) for _ in range(r.count(16))]
        r.done()
    except CoreError:
        log.warning("a stored session record is unreadable; a new session will be set up")
        return []
    for blob in blobs:
        try:
            found.append(session.Session.from_bytes(blob))
        except CoreError as exc:
            # No identifiers in the log: only that (and why) a session was set aside.
            log.warning("set aside a stored session that cannot be read (%s); a new one "
                        "will be set up", exc.code)
    return found


def save(store: Store, account: str, device: int, sessions: list[session.Session]) -> None:
    w = Writer().u32(len(sessions[:MAX_ARCHIVED + 1]))
    for s in sessions[:MAX_ARCHIVED + 1]:
        w.var(s.to_bytes())
    store.put(_KIND, _name(account, device), w.finish())


def delete(store: Store, account: str, device: int) -> None:
    store.delete(_KIND, _name(account, device))


def decrypt(sessions: list[session.Session], message: bytes, identity: keys.IdentityKeyPair,
            prekeys: Callable[[], PreKeys], expected: keys.IdentityPublicKey,
            now_ms: int) -> tuple[list[session.Session], bytes, PreKeys | None]:
    """Decrypt with whichever session fits; returns (sessions, plaintext, the prekeys
    used when a new session was set up).

    The session that decrypted moves to the front. An initial message that no held
    session knows starts a new one (``session.respond``, with ``prekeys()`` loaded only
    then); the others stay archived. ``now_ms`` expires old skipped message keys.
    """
    if session.is_prekey_message(message):
        base_key = session.PreKeyMessage.parse(message).header.base_key
        for i, s in enumerate(sessions):
            if s.base_key == base_key:
                plaintext = s.decrypt(message, now_ms=now_ms)
                return [s, *sessions[:i], *sessions[i + 1:]], plaintext, None
        loaded = prekeys()
        fresh, plaintext = session.respond(identity, loaded, message,
                                           expected_identity=expected, now_ms=now_ms)
        return [fresh, *sessions][:MAX_ARCHIVED + 1], plaintext, loaded
    if not sessions:
        raise MalformedMessage("message for a session we do not have")
    first_error: CoreError | None = None
    for i, s in enumerate(sessions):
        try:
            plaintext = s.decrypt(message, now_ms=now_ms)
        except DuplicateMessage:
            raise
        except CoreError as exc:
            first_error = first_error or exc
            continue
        return [s, *sessions[:i], *sessions[i + 1:]], plaintext, None
    assert first_error is not None
    raise first_error

__all__ = [
    "decrypt",
    "delete",
    "load",
    "save",
]
