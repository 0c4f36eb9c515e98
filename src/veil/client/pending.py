"""The persistent outbox: messages a person sent that the server has not acknowledged
(issue 10 §1, "Nothing typed is ever lost").

A message is saved here, inside the encrypted store, before anything goes to the
network, and leaves only when the server has acknowledged it (or when sending failed
for a reason a retry cannot fix, which the sender is told). Two stages:

- ``queued``: the text and the recipient as typed; nothing encrypted yet (the server
  may have been unreachable for the directory lookup).
- ``sealed``: the envelopes, one per recipient device, saved in the same transaction
  that advanced the sessions (for a group message, kind ``group``: the MLS
  PrivateMessage, saved with the group state that used its key). Every retry from
  here sends these same bytes, so a retry after an unknown outcome (a timeout,
  Ctrl-C, a crash after the server stored them) reaches the recipient as a duplicate
  ciphertext, which the recipient's session (or MLS secret tree) drops: the message
  is shown once.

The record is msgspec JSON inside the store's encryption (kind ``outbox``, one record
per message id, kept in the order they were queued).
"""

from __future__ import annotations

import msgspec

from veil.client.errors import ClientError, CorruptStore
from veil.client.store import Store

__all__ = [
    "GROUP_KIND",
    "KIND",
    "MAX_PENDING",
    "SYNC_KIND",
    "PendingMessage",
    "all_pending",
    "drop",
    "get",
    "save",
]

KIND = "outbox"
GROUP_KIND = "group"
# A sent 1:1 message on its way to this account's other devices (docs/devices.md): kept
# here like any message until the server took it, so a sync that cannot go at once goes
# on a later flush. Not one of the person's unsent messages (``Client.outbox`` hides it).
SYNC_KIND = "sent_sync"
# Bounded like every queue: a person offline for a long time can still queue this many.
MAX_PENDING = 10_000


class PendingMessage(msgspec.Struct, kw_only=True, frozen=True):
    id: str                       # the content id the recipient de-duplicates on
    to: str                       # as typed: "@name" or an account id
    text: str
    timestamp: int                # when it was typed (ms)
    account: str | None = None    # resolved recipient account, once known
    # Sealed envelopes by device id (set once the sessions advanced for them).
    envelopes: dict[int, bytes] | None = None
    sealed: bool = False          # sent with an access key rather than credentials
    # When the sender certificate inside the envelopes expires: envelopes the server
    # accepts after that are dropped by the recipient, so they are sealed anew (the
    # recipient also drops a second copy by the message id, so that is no duplicate).
    cert_expires: int | None = None
    attempts: int = 0
    last_error: str | None = None
    # What the content is: "text" (a message typed by a person, kept in the history),
    # "group_welcome" (a Welcome to a group, veil.client.groups: not in the history),
    # "group" (a message typed into the group whose id is ``to``) or "sent_sync".
    kind: str = "text"
    # A group message: the MLS PrivateMessage as encrypted (saved with the MLS state
    # that used its key, before it is posted) and the epoch it belongs to. Every retry
    # in that epoch posts these same bytes; a new epoch re-encrypts.
    group_message: bytes | None = None
    group_epoch: int | None = None
    # A group message: its sequence number (docs/groups.md, "Missing messages"), taken
    # at its first encryption and kept when a new epoch re-encrypts it.
    group_number: int | None = None
    # A "sent_sync": the account the synced message went to (``to`` is our own).
    sync_to: str | None = None
    # The content as made when it was typed (veil.client.content, without the profile
    # key): a reply, attachments, a timer, or a reaction, edit, deletion, receipt or
    # timer change. None: a plain text message made of ``text``.
    content: bytes | None = None
    # Attachments still to upload (veil.client.attachments upload job ids): the message
    # waits here from the moment it is sent, so a killed client resumes the upload.
    uploads: list[str] = []

    @property
    def stage(self) -> str:
        return "queued" if self.envelopes is None and self.group_message is None \
            else "sealed"


_DECODER = msgspec.json.Decoder(PendingMessage)
_ENCODER = msgspec.json.Encoder()


def save(store: Store, message: PendingMessage) -> None:
    if store.get(KIND, message.id) is None and store.count(KIND) >= MAX_PENDING:
        raise ClientError(f"the outbox already holds {MAX_PENDING} unsent messages; "
                          "connect to the server or cancel some ('veil outbox')")
    store.put(KIND, message.id, _ENCODER.encode(message))


def _decode(raw: bytes) -> PendingMessage:
    try:
        return _DECODER.decode(raw)
    except msgspec.MsgspecError:
        raise CorruptStore("a stored outbox message is damaged") from None


def get(store: Store, message_id: str) -> PendingMessage | None:
    raw = store.get(KIND, message_id)
    return None if raw is None else _decode(raw)


def all_pending(store: Store) -> list[PendingMessage]:
    """Every unsent message, oldest first."""
    return [_decode(raw) for raw in store.values(KIND)]


def drop(store: Store, message_id: str) -> bool:
    return store.delete(KIND, message_id)
