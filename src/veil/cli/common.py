"""What every command module of ``veil`` shares: where the home is, the passphrase,
server URLs, how peer text is shown on a terminal, one-line JSON or text output, and
opening the client around a command (``home_options``, ``with_client``).

Scripts use the commands without a terminal: the passphrase comes from
``VEIL_PASSPHRASE`` (or ``--passphrase-file``), nothing prompts when standard input is
not a terminal, and ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.cells import cell_len, set_cell_size
from rich.console import Console

from veil.cli.i18n import t
from veil.client import Client
from veil.client.errors import ClientError
from veil.client.pinning import parse_pin
from veil.client.store import Store

T = TypeVar("T")
DEFAULT_HOME = Path.home() / ".veil"
err_console = Console(stderr=True)


def home_path(value: str | None) -> Path:
    return Path(value).expanduser() if value else DEFAULT_HOME


def passphrase_for(home: Path, creating: bool, no_passphrase: bool = False,
                passphrase_file: str | None = None) -> str | None:
    if passphrase_file is not None:
        try:
            text = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(t("err.cannot_read", path=passphrase_file,
                                         reason=getattr(exc, "strerror", None) or exc)
                                       ) from None
        if not text:
            raise click.ClickException(t("err.file_empty", path=passphrase_file))
        return text
    env = os.environ.get("VEIL_PASSPHRASE")
    if env is not None:
        return env or None
    if no_passphrase:
        return None
    if not sys.stdin.isatty():
        if creating:
            # Never fall back silently to an unprotected key file.
            raise BadValue(t("err.no_terminal_passphrase"))
        return None
    if creating:
        value = click.prompt(t("prompt.new_passphrase"), default="", hide_input=True,
                             confirmation_prompt=t("prompt.repeat"), show_default=False)
        return value or None
    if (home / "store.key").exists():
        return None
    return str(click.prompt(t("prompt.passphrase"), hide_input=True))


USERNAME = re.compile(r"[A-Za-z0-9_]{3,32}")


class BadValue(click.ClickException):
    """An option or argument with a value that cannot work: a usage error (exit 2),
    said in one line without the usage text."""

    exit_code = 2


def server_url(text: str) -> str:
    """A server URL: http(s)://host[:port]; a bare host:port means http on loopback."""
    raw = text.strip()
    if "://" not in raw and raw.split(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"):
        raw = "http://" + raw
    parts = urlsplit(raw)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or parts.query or parts.fragment:
        raise BadValue(t("err.bad_server_url", value=repr(text)))
    return raw.rstrip("/")


def pin_value(text: str | None, server: str) -> str | None:
    """``--pin``: the SHA-256 fingerprint of an https server's TLS certificate (64 hex
    digits, colons allowed), normalised; None without the option."""
    if text is None:
        return None
    if urlsplit(server).scheme != "https":
        raise BadValue(t("err.pin_needs_https", server=server))
    try:
        return parse_pin(text)
    except ClientError:
        raise BadValue(t("err.bad_pin", value=repr(text))) from None


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


# C0 and C1 controls and DEL, and the invisible formatting characters that reorder or
# hide text (bidirectional overrides and isolates, zero-width characters, the BOM):
# shown escaped, never obeyed. A newline starts an indented continuation line instead.
_INVISIBLE = [*range(0x20), *range(0x7F, 0xA0), 0xAD, 0x061C, *range(0x200B, 0x2010),
              *range(0x202A, 0x202F), *range(0x2060, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFC)]
_CONTROL: dict[int, str] = {c: _escape(chr(c)) for c in _INVISIBLE if c not in (0x09, 0x0A)}
_CONTROL[0x0A] = "\n    "


def safe_text(text: str) -> str:
    """Peer text for a terminal: control and invisible formatting characters shown, not
    obeyed (no forged lines, no escape sequences or reordering that hide a warning);
    the lines of a multi-line message indented under the first. JSON output needs none
    of this."""
    return text.translate(_CONTROL)


def pad(text: str, columns: int) -> str:
    """``text`` padded to ``columns`` terminal cells (a CJK character takes two), or
    cut to fit: ``f"{x:<20}"`` counts characters, which misaligns Chinese names."""
    if cell_len(text) > columns:
        text = set_cell_size(text, columns - 1) + "…"
    return text + " " * (columns - cell_len(text))


def emit(as_json: bool, obj: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(obj) if as_json else text)


def when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))




def home_options(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Adds --home/--json/--proxy and runs the coroutine command."""
    @click.option("--home", envvar="VEIL_HOME", default=None, help=t("opt.home"))
    @click.option("--json", "as_json", is_flag=True, help=t("opt.json"))
    @click.option("--proxy", envvar="VEIL_PROXY", default=None, help=t("opt.proxy"))
    @wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        asyncio.run(fn(**kwargs))
    return wrapper




def quiet_client_logs() -> None:
    """The SDK logs what it retries (a failed certificate refresh, prekey upkeep) as
    warnings for programs; the commands report what matters themselves, in one line.
    ``VEIL_LOG_LEVEL=INFO`` (or WARNING, DEBUG) shows the SDK's log on stderr."""
    logger = logging.getLogger("veil.client")
    level = os.environ.get("VEIL_LOG_LEVEL", "").upper()
    if level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("veil: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
    else:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False




async def open_client(home: str | None, proxy: str | None) -> Client:
    quiet_client_logs()
    path = home_path(home)
    return await Client.open(path, passphrase=passphrase_for(path, creating=False)
                             if Store.exists(path) else None, proxy=proxy)




async def with_client(home: str | None, proxy: str | None,
                       body: Callable[[Client], Awaitable[T]]) -> T:
    client = await open_client(home, proxy)
    try:
        return await body(client)
    finally:
        await client.close()




def qr_text(payload: bytes) -> str:
    import segno
    buffer = io.StringIO()
    segno.make(payload, error="m").terminal(out=buffer, compact=True)
    return buffer.getvalue()


__all__ = [
    "DEFAULT_HOME",
    "USERNAME",
    "BadValue",
    "emit",
    "err_console",
    "home_options",
    "home_path",
    "open_client",
    "pad",
    "passphrase_for",
    "pin_value",
    "qr_text",
    "quiet_client_logs",
    "safe_text",
    "server_url",
    "when",
    "with_client",
]
