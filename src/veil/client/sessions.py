"""Every session the client holds with one remote device: the current one and a few
archived ones (as libsignal keeps "previous session states").

Two people who write to each other for the first time at the same moment each start a
session as initiator and each receive the other's initial message. Replacing the one
with the other would make every later message fail on one side; keeping the older
session archived lets either be used until both sides settle on one (the one that last
decrypted something becomes current).
"""

from __future__ import annotations

from veil.client.store import Store
from veil.core import keys, session
from veil.core.encoding import Reader, Writer
from veil.core.errors import CoreError, DuplicateMessage, MalformedMessage

MAX_ARCHIVED = 4
_KIND = "sessions"


def _name(account: str, device: int) -> str:
    return f"{account}.{device}"


def load(store: Store, account: str, device: int) -> list[session.Session]:
    """Current session first; empty when there is none."""
    raw = store.get(_KIND, _name(account, device))
    if raw is None:
        return []
    r = Reader(raw, "stored sessions")
    found = [session.Session.from_bytes(r.var(1 << 20)) for _ in range(r.count(16))]
    r.done()
    return found


def save(store: Store, account: str, device: int, sessions: list[session.Session]) -> None:
    w = Writer().u32(len(sessions[:MAX_ARCHIVED + 1]))
    for s in sessions[:MAX_ARCHIVED + 1]:
        w.var(s.to_bytes())
    store.put(_KIND, _name(account, device), w.finish())


def delete(store: Store, account: str, device: int) -> None:
    store.delete(_KIND, _name(account, device))


def decrypt(sessions: list[session.Session], message: bytes, identity: keys.IdentityKeyPair,
            prekeys: keys.PreKeys, expected: keys.IdentityPublicKey
            ) -> tuple[list[session.Session], bytes, bool]:
    """Decrypt with whichever session fits; returns (sessions, plaintext, used prekeys).

    The session that decrypted moves to the front. An initial message that no held
    session knows starts a new one (``session.respond``); the others stay archived.
    """
    if session.is_prekey_message(message):
        base_key = session.PreKeyMessage.parse(message).header.base_key
        for i, s in enumerate(sessions):
            if s.base_key == base_key:
                plaintext = s.decrypt(message)
                return [s, *sessions[:i], *sessions[i + 1:]], plaintext, False
        fresh, plaintext = session.respond(identity, prekeys, message, expected_identity=expected)
        return [fresh, *sessions][:MAX_ARCHIVED + 1], plaintext, True
    if not sessions:
        raise MalformedMessage("message for a session we do not have")
    first_error: CoreError | None = None
    for i, s in enumerate(sessions):
        try:
            plaintext = s.decrypt(message)
        except DuplicateMessage:
            raise
        except CoreError as exc:
            first_error = first_error or exc
            continue
        return [s, *sessions[:i], *sessions[i + 1:]], plaintext, False
    assert first_error is not None
    raise first_error
