"""The local history of conversations (in the encrypted store) and what lists them."""

from __future__ import annotations

from dataclasses import dataclass

from veil.client import contacts
from veil.client.records import HistoryEntry
from veil.client.store import Store


@dataclass(frozen=True)
class Conversation:
    peer: str
    username: str | None
    verified: bool
    last: HistoryEntry | None


class History:
    def __init__(self, store: Store, me: str | None = None) -> None:
        self._store = store
        self._me = me            # this account: its "contact" holds our other devices

    def entries(self, peer: str, limit: int = 50) -> list[HistoryEntry]:
        return [HistoryEntry.decode(raw) for raw in self._store.history(peer, limit)]

    def conversations(self) -> list[Conversation]:
        out = []
        for contact in contacts.every(self._store):
            if contact.account == self._me:
                continue
            last = self.entries(contact.account, 1)
            if last:
                out.append(Conversation(contact.account, contact.username, contact.verified,
                                        last[0]))
        return sorted(out, key=lambda c: c.last.timestamp if c.last else 0, reverse=True)

__all__ = [
    "Conversation",
    "History",
]
