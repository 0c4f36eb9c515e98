"""The retention job of the server (issue 12 §4): what expires, and the space it frees.

Every ``expiry_interval_s`` (and once at start) one pass

1. deletes group messages, idle groups, past epochs' verifiers and expired KeyPackages
   (:meth:`GroupService.expire`, ``group_message_ttl_s`` and friends);
2. deletes queued envelopes stored more than ``envelope_ttl_s`` ago, delivered or not
   (:meth:`MessageService.expire`);
3. when either deleted anything, gives the space back (:meth:`Storage.reclaim`: on SQLite
   the free pages go back to the file system and the WAL is emptied, so the files do
   not keep old ciphertext; PostgreSQL leaves it to autovacuum).

A pass that deleted something says so in one operator line (``veil.server.lines``
``expired``: counts only, never an account or a byte of content), logged and shown by
``veil server``. A step that fails is logged by its error code and the pass goes on;
the next pass tries again. Attachments' blobs have their own job (``blobs/files.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from veil.server.errors import ServerError
from veil.server.lines import Line, line
from veil.server.services.groups import GroupService
from veil.server.services.messages import MessageService
from veil.server.storage.base import EnvelopeExpiry, ExpiryReport, Reclaimed, Storage

log = logging.getLogger("veil.server.retention")


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one pass deleted and gave back."""

    envelopes: EnvelopeExpiry
    groups: ExpiryReport
    reclaimed: Reclaimed

    @property
    def deleted(self) -> bool:
        g = self.groups
        return bool(self.envelopes.envelopes or g.group_messages or g.groups
                    or g.group_epochs or g.key_packages)

    def line(self) -> Line:
        return line("expired", envelopes=self.envelopes.envelopes,
                    bytes=self.envelopes.bytes, group_messages=self.groups.group_messages,
                    groups=self.groups.groups, key_packages=self.groups.key_packages,
                    pages=self.reclaimed.pages)


class RetentionService:
    def __init__(self, storage: Storage, messages: MessageService, groups: GroupService
                 ) -> None:
        self._storage = storage
        self._messages = messages
        self._groups = groups

    async def run_once(self) -> RetentionReport:
        """One pass; each step's failure is logged (by code) and the others still run."""
        groups = ExpiryReport(0, 0, 0, 0)
        envelopes = EnvelopeExpiry(0, 0)
        try:
            groups = await self._groups.expire()
        except ServerError as exc:
            log.warning("group expiry failed: %s", exc.code)
        try:
            envelopes = await self._messages.expire()
        except ServerError as exc:
            log.warning("envelope expiry failed: %s", exc.code)
        report = RetentionReport(envelopes, groups, Reclaimed())
        if report.deleted:
            try:
                report = RetentionReport(envelopes, groups, await self._storage.reclaim())
            except ServerError as exc:
                log.warning("reclaiming database space failed: %s", exc.code)
        return report


async def run_retention(
    service: RetentionService, interval_s: float,
    announce: Callable[[Line], None] | None = None,
) -> None:
    """The retention job: :meth:`RetentionService.run_once` now and every ``interval_s``;
    a pass that deleted something is logged and, with ``announce``, told the operator."""
    while True:
        report = await service.run_once()
        if report.deleted:
            said = report.line()
            log.info("%s", said)
            if announce is not None:
                # A closed standard output must not stop the retention itself.
                with contextlib.suppress(OSError):
                    announce(said)
        await asyncio.sleep(interval_s)


__all__ = [
    "RetentionReport",
    "RetentionService",
    "run_retention",
]
