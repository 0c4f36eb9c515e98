"""Files on the command line (issue 12 §1; docs/attachments.md): progress of uploads and
downloads, sizes, and saving what a message carries.

Progress goes to standard error as a rich progress bar, only when standard error is a
terminal (scripts and logs get no bar). A transfer that goes on from where an earlier
one stopped says so ("resumed at 12 MiB") in every mode. With ``--json`` the progress
is JSON lines on standard output instead, for scripts::

    {"event": "progress", "direction": "upload", "name": "a.bin", "done": 1048576,
     "total": 41943040}
    {"event": "resumed", "direction": "upload", "name": "a.bin", "at": 12582912,
     "total": 41943040}

File names come from peers: they are shown through :func:`safe_text`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from veil.cli.common import emit, err_console, safe_text
from veil.cli.i18n import explain, t
from veil.client import Client, IncomingMessage, SentMessage
from veil.client.attachments import TransferProgress
from veil.client.errors import AttachmentRefused, ClientError, ServerUnreachable
from veil.client.events import AttachmentInfo
from veil.core.errors import VeilError

MIB = 1 << 20


def size_text(n: int) -> str:
    """``n`` bytes as people read it: 512 B, 3.4 KiB, 12.0 MiB, 1.1 GiB."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def attachment_obj(info: AttachmentInfo | dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` says of an attachment: never its key, token or digest."""
    if isinstance(info, AttachmentInfo):
        return {"name": info.name, "size": info.size, "type": info.media_type,
                "path": info.path}
    return {"name": str(info.get("name", "")), "size": int(info.get("size", 0)),
            "type": str(info.get("type", "")), "path": info.get("path")}


def attachment_line(info: AttachmentInfo | dict[str, Any]) -> str:
    """``📎 name (size, type)``, and where it was saved once it was."""
    obj = attachment_obj(info)
    line = t("file.line", name=safe_text(obj["name"]), size=size_text(obj["size"]),
             type=safe_text(obj["type"]))
    if obj["path"]:
        line += t("file.saved_at", path=safe_text(str(obj["path"])))
    return line


class TransferView:
    """The progress callback of one command: a bar on a terminal, JSON lines with
    ``--json``, quiet otherwise; "resumed at" said whenever it happens."""

    def __init__(self, as_json: bool, bar: bool | None = None) -> None:
        self._json = as_json
        self._bar = (not as_json and sys.stderr.isatty()) if bar is None else bar
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self.resumed: list[TransferProgress] = []

    def __enter__(self) -> TransferView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __call__(self, p: TransferProgress) -> None:
        if p.resumed_at is not None:
            self.resumed.append(p)
            self._resumed(p)
        if self._json:
            emit(True, {"event": "progress", "direction": p.direction, "name": p.name,
                        "done": p.done, "total": p.total}, "")
            return
        if not self._bar:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                transient=False)
            self._progress.start()
        key = (p.direction, p.name)
        if key not in self._tasks:
            label = t("file.uploading") if p.direction == "upload" else t("file.downloading")
            self._tasks[key] = self._progress.add_task(
                f"{label} {escape(safe_text(p.name))}", total=max(p.total, 1))
        self._progress.update(self._tasks[key], completed=p.done, total=max(p.total, 1))

    def _resumed(self, p: TransferProgress) -> None:
        at = p.resumed_at or 0
        if self._json:
            emit(True, {"event": "resumed", "direction": p.direction, "name": p.name,
                        "at": at, "total": p.total}, "")
            return
        name, mib, total = safe_text(p.name), f"{at / MIB:.1f}", size_text(p.total)
        text = t("file.resumed_up", name=name, at=mib, total=total) \
            if p.direction == "upload" else \
            t("file.resumed_down", name=name, at=mib, total=total)
        if self._progress is not None:
            self._progress.console.print(escape(text))
        else:
            err_console.print(escape(text), highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


async def flush_outbox(c: Client, view: TransferView) -> list[SentMessage]:
    """``Client.flush_outbox`` with the uploads it resumes shown in ``view``."""
    try:
        return await c.flush_outbox(view)
    finally:
        view.close()


def conversation_of(m: IncomingMessage) -> str:
    """The conversation key of a received message: the group, else the sender."""
    return m.group if m.group is not None else m.sender


async def save_files(c: Client, m: IncomingMessage, directory: Path | None,
                     as_json: bool) -> bool:
    """Download, check and save every file of ``m`` (into ``directory``, or the home's
    downloads folder); False when one could not be saved. A refused file (digest or
    decryption wrong: deleted, never shown) or a failed download is one line naming
    it, and the rest goes on; ``veil download`` tries again later."""
    ok = True
    for index, info in enumerate(m.attachments):
        with TransferView(as_json) as view:
            try:
                saved = await c.download(conversation_of(m), m.id, index, directory, view)
            except (AttachmentRefused, ClientError, ServerUnreachable) as exc:
                ok = False
                failed(as_json, m.id, info, exc)
                continue
        emit(as_json, {"event": "saved", "message_id": m.id, "index": index,
                       "name": info.name, "size": info.size, "type": info.media_type,
                       "path": str(saved)},
             t("file.saved", name=safe_text(info.name), path=safe_text(str(saved))))
    return ok


def failed(as_json: bool, message_id: str, info: AttachmentInfo, exc: VeilError) -> None:
    """One line: which file could not be saved, and why."""
    reason = explain(exc)
    if as_json:
        emit(True, {"event": "download_failed", "message_id": message_id,
                    "name": info.name, "error": {"code": exc.code, "message": reason}}, "")
        return
    name, short = safe_text(info.name), message_id[:8]
    line = t("file.refused", name=name, id=short, reason=reason) \
        if isinstance(exc, AttachmentRefused) else \
        t("file.not_saved", name=name, id=short, reason=reason)
    click.echo(t("main.error_line", message=line), err=True)


__all__ = [
    "TransferView",
    "attachment_line",
    "attachment_obj",
    "conversation_of",
    "failed",
    "flush_outbox",
    "save_files",
    "size_text",
]
