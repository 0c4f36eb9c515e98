"""Contacts and the identity their sessions use (outside review, issue 8 item 7).

The review found the two drifting apart: a contact read before a network call and
written back after it erased an identity-change warning another process had recorded
meanwhile; a held session was used for encrypting whatever identity it belonged to;
the safety number came from the contact record, not from the sessions. So here:

- every change to a contact is a read-modify-write inside one store transaction
  (:func:`update`), re-reading the record there, never a write-back of an older copy;
- :func:`usable_sessions` gives only the sessions whose remote identity is the
  contact's identity; the others are set aside (and deleted with the next save), so a
  new session is set up from a bundle whose identity is checked against the contact;
- :func:`session_identity` is the identity the safety number is computed from: the
  one the contact's sessions use (they must agree), else the contact's.

Usernames are indexed (kind ``username``: name → account, written with the contact),
so ``@name`` is found without reading every contact. Homes from before the index get
it built once, on the first lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from veil.client import sessions
from veil.client.errors import IdentityChanged
from veil.client.records import Contact
from veil.client.store import Store
from veil.core import keys, session

log = logging.getLogger("veil.client")
T = TypeVar("T")
_KIND = "contact"
_BY_NAME = "username"
_INDEXED = ("self", "username_index")


def get(store: Store, account: str) -> Contact | None:
    raw = store.get(_KIND, account)
    return None if raw is None else Contact.decode(raw)


def every(store: Store) -> list[Contact]:
    return [Contact.decode(raw) for raw in store.values(_KIND)]


def save(store: Store, contact: Contact) -> None:
    with store.transaction():
        store.put(_KIND, contact.account, contact.encode())
        if contact.username is not None and \
                store.get(_BY_NAME, contact.username) != contact.account.encode():
            store.put(_BY_NAME, contact.username, contact.account.encode())


def by_username(store: Store, name: str) -> Contact | None:
    """The contact known as ``name`` (lower case), through the index."""
    if store.get(*_INDEXED) is None:
        with store.transaction():            # once per home: index what is there
            for each in every(store):
                if each.username is not None:
                    store.put(_BY_NAME, each.username, each.account.encode())
            store.put(*_INDEXED, b"1")
    raw = store.get(_BY_NAME, name)
    if raw is None:
        return None
    contact = get(store, raw.decode())
    # The index may be stale (the name moved to another account): the contact decides.
    return contact if contact is not None and contact.username == name else None


def update(store: Store, account: str, change: Callable[[Contact], T]) -> tuple[Contact, T]:
    """Apply ``change`` to the stored contact (created if new) in one transaction."""
    with store.transaction():
        contact = get(store, account) or Contact(account)
        result = change(contact)
        save(store, contact)
    return contact, result


def note_identity(contact: Contact, identity: keys.IdentityPublicKey) -> bool:
    """Record the identity a device presents. True when it replaced a different one
    (a verified contact then becomes unverified with ``identity_changed`` set)."""
    raw = identity.to_bytes()
    if contact.identity is None:
        contact.identity = raw
        return False
    if contact.identity == raw:
        return False
    contact.identity = raw
    if contact.verified:
        contact.verified, contact.identity_changed = False, True
    log.warning("identity key of contact %s… changed", contact.account[:8])
    return True


def note_linked(contact: Contact, device: int) -> bool:
    """Record an approved (or identity-proving) device of the contact. True when it is
    news worth a ``DeviceLinked`` event: not on first contact, and not for the first
    device of a contact known from before approvals existed."""
    if device in contact.linked_devices:
        return False
    known_before = contact.identity is not None and bool(
        contact.linked_devices or contact.devices)
    legacy_first = not contact.linked_devices and device in contact.devices[:1]
    contact.linked_devices = sorted({*contact.linked_devices, device})
    return known_before and not legacy_first


def usable_sessions(store: Store, contact: Contact, device: int
                    ) -> tuple[list[session.Session], bool]:
    """The device's sessions that belong to the contact's identity, and whether any
    were set aside for belonging to another one."""
    held = sessions.load(store, contact.account, device)
    if contact.identity is None:
        return [], bool(held)
    good = [s for s in held if s.remote_identity.to_bytes() == contact.identity]
    if len(good) != len(held):
        log.warning("set aside sessions with contact %s… whose identity is not the "
                    "contact's", contact.account[:8])
    return good, len(good) != len(held)


def session_identity(store: Store, contact: Contact) -> keys.IdentityPublicKey | None:
    """The identity the contact's current sessions use (the contact's when there are
    none). Sessions that disagree among themselves are refused."""
    found = {current.remote_identity.to_bytes()
             for device in contact.devices
             for current in sessions.load(store, contact.account, device)[:1]}
    if len(found) > 1:
        raise IdentityChanged(f"the sessions with {contact.account[:8]}… use more than one "
                              "identity key; compare safety numbers again")
    if found:
        return keys.IdentityPublicKey.from_bytes(found.pop())
    return contact.identity_key()

__all__ = [
    "by_username",
    "every",
    "get",
    "note_identity",
    "note_linked",
    "save",
    "session_identity",
    "update",
    "usable_sessions",
]
