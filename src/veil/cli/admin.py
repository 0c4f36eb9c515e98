"""``veil admin``: the operator's commands on a running server's admin listener (issue 13
§4; docs/operations.md).

The command finds the server from its data directory (``--data``, before or after the
sub-command): ``DATA/admin/address`` holds the admin listener's URL and
``DATA/admin/token`` its bearer token (mode 0600: the operator's account only). A
stopped server is one line saying so — except ``veil admin audit verify``, which then
checks the audit chain in the database itself (the audit layer's ``verify_offline``).
``--json`` prints the admin API's JSON answer, one object per line.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from functools import update_wrapper
from pathlib import Path
from typing import Any

import click

from veil.cli.i18n import localized, t
from veil.core.errors import VeilError

TIMEOUT_S = 15.0
# Error codes of this command's own failures (the server's come from its answers).
FAILED = "admin_failed"
TOKEN_UNREADABLE = "admin_token_unreadable"  # noqa: S105 - an error code
TLS_FAILED = "admin_tls_failed"
DEFAULT_DATA = "veil-data"


class AdminCommandError(VeilError):
    """The admin listener cannot be reached, or it refused the request."""

    code = FAILED

    def __init__(self, message: str, code: str | None = None, status: int | None = None
                 ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
            self.server_code = code
        self.status = status


class ServerNotRunning(AdminCommandError):
    code = "server_not_running"


# --- options: --data / --config / --json on the group and on every sub-command ---------


def _options(fn: Callable[..., None]) -> Callable[..., None]:
    def wrapper(ctx: click.Context, data: str | None, config: str | None, as_json: bool,
                **kwargs: Any) -> None:
        # The group's --data/--config/--json (``veil admin --data D status``), unless
        # given again after the sub-command (``veil admin status --data D``).
        group = ctx.parent.obj if ctx.parent is not None and \
            isinstance(ctx.parent.obj, dict) else {}
        chosen = Admin(data or group.get("data"), config or group.get("config"),
                       as_json or bool(group.get("as_json")))
        fn(chosen, **kwargs)

    command: Callable[..., None] = click.pass_context(update_wrapper(wrapper, fn))
    for option in (
        click.option("--json", "as_json", is_flag=True, default=False, help=t("opt.json")),
        click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
                     default=None, help=t("opt.admin.config")),
        click.option("--data", "data", type=click.Path(file_okay=False), default=None,
                     help=t("opt.admin.data")),
    ):
        command = option(command)
    return command


class Admin:
    """One invocation: where the server is, and how to print."""

    def __init__(self, data: str | None, config: str | None, as_json: bool) -> None:
        self.config_path = Path(config) if config else None
        if data is None and self.config_path is not None:
            # The server's own data directory, as its configuration file names it.
            from veil.server.config import load_config

            self.data_dir = load_config(self.config_path).data_dir
        else:
            self.data_dir = Path(data or DEFAULT_DATA)
        self.as_json = as_json

    # --- finding and calling the listener ---------------------------------------------

    def _address(self) -> str:
        path = self.data_dir / "admin" / "address"
        try:
            url = path.read_text(encoding="utf-8").strip()
        except OSError:
            url = ""
        if not url.startswith(("http://", "https://")):  # only what the server writes
            raise localized(ServerNotRunning(t("admin.not_running", data=self.data_dir)))
        return url

    def _token(self) -> str:
        path = self.data_dir / "admin" / "token"
        try:
            token = path.read_text(encoding="utf-8").strip()
        except PermissionError:
            raise localized(AdminCommandError(t("admin.token_unreadable", path=path),
                                              TOKEN_UNREADABLE)) from None
        except OSError:
            token = ""
        if not token:
            raise localized(ServerNotRunning(t("admin.not_running", data=self.data_dir)))
        return token

    def _ssl(self, url: str) -> ssl.SSLContext | None:
        if not url.startswith("https:"):
            return None
        context = ssl.create_default_context()
        own = self.data_dir / "tls" / "cert.pem"  # a self-signed certificate of the server
        if own.exists():
            context.load_verify_locations(cafile=str(own))
            context.check_hostname = False
        return context

    def open(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The HTTP response of the admin API (a file-like object)."""
        url = self._address()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                   **({"Content-Type": "application/json"} if data is not None else {})}
        request = urllib.request.Request(  # noqa: S310 - _address: http(s) only
            url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S,  # noqa: S310
                                          context=self._ssl(url))
        except urllib.error.HTTPError as exc:
            raise _refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise localized(AdminCommandError(
                    t("admin.tls_failed", url=url, reason=str(reason)[:200]),
                    TLS_FAILED)) from None
            raise localized(ServerNotRunning(t("admin.not_running", data=self.data_dir))) \
                from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        with self.open(method, path, body) as response:
            answer = json.loads(response.read().decode())
        return answer if isinstance(answer, dict) else {"result": answer}

    def running(self) -> bool:
        """Whether the admin listener answers (for ``audit verify``)."""
        try:
            url = self._address()
            with urllib.request.urlopen(url + "/health", timeout=3.0,  # noqa: S310
                                        context=self._ssl(url)) as response:
                return bool(response.status == 200)
        except (VeilError, OSError, ValueError):
            return False

    def show(self, answer: dict[str, Any], text: str | Sequence[str]) -> None:
        if self.as_json:
            click.echo(json.dumps(answer, ensure_ascii=False))
            return
        for line in [text] if isinstance(text, str) else text:
            click.echo(line)


def _refused(exc: urllib.error.HTTPError) -> AdminCommandError:
    try:
        error = json.loads(exc.read().decode()).get("error", {})
        code, message = str(error.get("code", FAILED)), str(error.get("message", ""))
    except (ValueError, AttributeError, OSError):
        code, message = FAILED, ""
    return AdminCommandError(message or t("admin.refused", status=exc.code), code, exc.code)


# --- the commands -------------------------------------------------------------------


@click.group(name="admin", help=t("cmd.admin"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.admin.data"))
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None, help=t("opt.admin.config"))
@click.option("--json", "as_json", is_flag=True, default=False, help=t("opt.json"))
@click.pass_context
def admin(ctx: click.Context, data: str | None, config: str | None, as_json: bool) -> None:
    ctx.obj = {"data": data, "config": config, "as_json": as_json}


def _kinds(connections: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(connections.items()))


@admin.command(name="status", help=t("cmd.admin.status"))
@_options
def status(a: Admin) -> None:
    s = a.call("GET", "/admin/api/status")
    a.show(s, [
        t("admin.status.server", version=s.get("version"), url=s.get("listener_url"),
          uptime=round(float(s.get("uptime_s") or 0))),
        t("admin.status.admin", url=s.get("admin_url")),
        t("admin.status.registration", mode=s.get("registration")),
        t("admin.status.connections", kinds=_kinds(s.get("connections") or {})),
        t("admin.status.protection", blocks=s.get("blocks"), alerts=s.get("alerts")),
        t("admin.status.messages", stored=(s.get("messages") or {}).get("stored"),
          delivered=(s.get("messages") or {}).get("delivered")),
    ])


@admin.command(name="alerts", help=t("cmd.admin.alerts"))
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@_options
def alerts(a: Admin, limit: int) -> None:
    answer = a.call("GET", f"/admin/api/alerts?limit={limit}")
    items = answer.get("alerts") or []
    a.show(answer, [t("admin.alerts.line", rule=x.get("rule"), count=x.get("count"),
                      window=x.get("window_s"), source=x.get("source_hash"),
                      blocked=x.get("blocked_s"))
                    for x in items] or t("admin.alerts.none"))


@admin.command(name="blocks", help=t("cmd.admin.blocks"))
@_options
def blocks(a: Admin) -> None:
    answer = a.call("GET", "/admin/api/blocks")
    items = answer.get("blocks") or []
    a.show(answer, [t("admin.blocks.line", id=b.get("id"), rule=b.get("rule"),
                      source=b.get("key_hash"), left=round(float(b.get("seconds_left") or 0)),
                      count=b.get("count"))
                    for b in items] or t("admin.blocks.none"))


@admin.command(name="lift", help=t("cmd.admin.lift"))
@click.argument("block_id")
@_options
def lift(a: Admin, block_id: str) -> None:
    answer = a.call("POST", f"/admin/api/blocks/{urllib.parse.quote(block_id, safe='')}"
                            "/lift")
    a.show(answer, t("admin.lifted", id=block_id))


@admin.command(name="deny", help=t("cmd.admin.deny"))
@click.argument("cidr", required=False)
@_options
def deny(a: Admin, cidr: str | None) -> None:
    if cidr is None:
        answer = a.call("GET", "/admin/api/deny")
        rules = answer.get("rules") or []
        a.show(answer, [str(r) for r in rules] or t("admin.rules.none"))
        return
    answer = a.call("POST", "/admin/api/deny", {"cidr": cidr})
    a.show(answer, t("admin.denied", cidr=answer.get("denied", cidr)))


@admin.command(name="allow", help=t("cmd.admin.allow"))
@click.argument("cidr")
@_options
def allow(a: Admin, cidr: str) -> None:
    answer = a.call("DELETE", "/admin/api/deny", {"cidr": cidr})
    shown = answer.get("cidr", cidr)
    a.show(answer, t("admin.allowed", cidr=shown) if answer.get("removed")
           else t("admin.allow_none", cidr=shown))


@admin.command(name="reload", help=t("cmd.admin.reload"))
@_options
def reload(a: Admin) -> None:
    answer = a.call("POST", "/admin/api/reload")
    a.show(answer, t("admin.reloaded"))


@admin.command(name="invites", help=t("cmd.admin.invites"))
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--hours", type=click.IntRange(1, 24 * 365), default=72, show_default=True,
              help=t("opt.invite.hours"))
@_options
def invites(a: Admin, count: int, hours: int) -> None:
    answer = a.call("POST", "/admin/api/invites", {"count": count, "hours": hours})
    a.show(answer, [str(token) for token in answer.get("invites") or []])


@admin.group(name="audit", help=t("cmd.admin.audit"))
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help=t("opt.admin.data"))
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None, help=t("opt.admin.config"))
@click.option("--json", "as_json", is_flag=True, default=False, help=t("opt.json"))
@click.pass_context
def audit(ctx: click.Context, data: str | None, config: str | None, as_json: bool) -> None:
    outer = ctx.parent.obj if ctx.parent is not None and isinstance(ctx.parent.obj, dict) \
        else {}
    ctx.obj = {"data": data or outer.get("data"), "config": config or outer.get("config"),
               "as_json": as_json or bool(outer.get("as_json"))}


def _report_text(report: dict[str, Any]) -> str:
    if report.get("ok"):
        return t("admin.audit.ok", records=report.get("records"),
                 checkpoints=report.get("checkpoints"))
    return t("admin.audit.broken", seq=report.get("first_broken"),
             reason=report.get("reason"), records=report.get("records"))


@audit.command(name="verify", help=t("cmd.admin.audit.verify"))
@_options
def audit_verify(a: Admin) -> None:
    if a.running():
        answer = a.call("GET", "/admin/api/audit/verify")
        report = answer.get("report") or {}
    else:
        report = _verify_offline(a)
        answer = {"report": report, "offline": True}
    a.show(answer, _report_text(report))
    if not report.get("ok"):
        raise SystemExit(1)


def _verify_offline(a: Admin) -> dict[str, Any]:
    """The audit layer's check of a stopped server's database (read only)."""
    import asyncio

    from veil.server.admin.sources import plain
    from veil.server.config import load_config
    from veil.server.protection.audit import verify_offline

    config = load_config(a.config_path, data_dir=a.data_dir)
    report = plain(asyncio.run(verify_offline(config)))
    return report if isinstance(report, dict) else {}


@audit.command(name="export", help=t("cmd.admin.audit.export"))
@click.option("--after", type=click.IntRange(0), default=0, show_default=True,
              help=t("opt.admin.after"))
@_options
def audit_export(a: Admin, after: int) -> None:
    with a.open("GET", f"/admin/api/audit/export?after={after}") as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line:
                click.echo(line)


COMMANDS = [admin]

__all__ = [
    "COMMANDS",
    "AdminCommandError",
    "ServerNotRunning",
]
