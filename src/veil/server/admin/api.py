"""The admin API (issue 13 §4): JSON over the admin listener, for ``veil admin`` and the
dashboard.

Every route here needs the operator (:class:`~veil.server.admin.auth.AdminAuth`: the
bearer token, or a dashboard session with its CSRF header for changes). Each change
is recorded in the audit log (``admin.lift``, ``admin.deny``, ``admin.allow``,
``admin.reload``, ``admin.invites``, ``admin.audit_export``) with small fields only: a
CIDR or a block's address appears there as the audit layer's keyed hash, never in clear.

``reload`` answers 503 ``not_available`` when the server was started without a
configuration file to read again.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from veil.server.admin.sources import MAX_LISTED, plain
from veil.server.admin.state import ADMIN, AdminState
from veil.server.errors import (
    AdminBlockNotFound,
    ConfigError,
    InvalidJson,
    ValidationFailed,
)
from veil.server.http.context import json_response

log = logging.getLogger("veil.server.admin")

MAX_INVITES = 1000
MAX_INVITE_HOURS = 24 * 365
EXPORT_PAGE = 500


def _state(request: web.Request) -> AdminState:
    state = request.app[ADMIN]
    state.auth.check(request)
    return state


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    text = await request.text()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidJson("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    return data


def _limit(request: web.Request, default: int = MAX_LISTED) -> int:
    try:
        value = int(request.query.get("limit", default))
    except ValueError as exc:
        raise ValidationFailed("limit must be a whole number") from exc
    return max(1, min(value, MAX_LISTED))


def record(state: AdminState, kind: str, **fields: Any) -> None:
    """An admin action into the audit log (queued: never waits)."""
    state.context.protection.audit.record(kind, **fields)


def keyed(state: AdminState, value: str) -> str:
    return state.context.protection.audit.keyed(value)


def parse_cidr(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("give a CIDR such as 203.0.113.0/24 or 2001:db8::/48")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValidationFailed(f"not a CIDR (IPv4 or IPv6 network): {value[:60]!r}") from exc


# --- reading ---------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    return json_response(_state(request).view.status())


async def alerts(request: web.Request) -> web.Response:
    state = _state(request)
    items = state.view.recent_alerts(_limit(request))
    return json_response({"alerts": items, "total": state.metrics.alerts_total})


async def blocks(request: web.Request) -> web.Response:
    state = _state(request)
    active = state.view.active_blocks()
    return json_response({"blocks": active[:_limit(request)], "total": len(active)})


# --- changing --------------------------------------------------------------------------


async def lift(request: web.Request) -> web.Response:
    state = _state(request)
    block_id = request.match_info["block_id"]
    if not state.context.protection.blocks.lift(block_id, by="operator"):
        raise AdminBlockNotFound("no block in force has that id")
    record(state, "admin.lift", block=block_id[:64])
    log.info("admin lifted block %s", block_id[:16])
    return json_response({"lifted": block_id})


async def deny(request: web.Request) -> web.Response:
    state = _state(request)
    cidr = parse_cidr((await _body(request)).get("cidr"))
    network = state.context.protection.network
    try:
        cidr = await network.deny_runtime(cidr)
    except ValueError as exc:  # too many runtime rules
        raise ValidationFailed(str(exc)) from None
    record(state, "admin.deny", cidr_hash=keyed(state, cidr),
           prefix=int(cidr.rsplit("/", 1)[1]))
    log.info("admin denied a network (/%s)", cidr.rsplit("/", 1)[1])
    return json_response({"denied": cidr, "rules": network.runtime_rules()})


async def allow(request: web.Request) -> web.Response:
    """``DELETE /admin/api/deny``: a runtime deny rule removed."""
    state = _state(request)
    cidr = parse_cidr((await _body(request)).get("cidr") or request.query.get("cidr"))
    network = state.context.protection.network
    removed = await network.remove_runtime(cidr)
    if removed:
        record(state, "admin.allow", cidr_hash=keyed(state, cidr),
               prefix=int(cidr.rsplit("/", 1)[1]))
    return json_response({"removed": removed, "cidr": cidr,
                          "rules": network.runtime_rules()})


async def deny_rules(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response({"rules": state.context.protection.network.runtime_rules()})


async def reload(request: web.Request) -> web.Response:
    """The configuration file read again (as SIGHUP does): ``[network]`` and ``[rules]``."""
    state = _state(request)
    try:
        result = state.context.protection.reload()
    except ConfigError as exc:
        raise ValidationFailed(f"the configuration file was not applied: {exc.message}") \
            from None
    record(state, "admin.reload")
    return json_response({"reloaded": True, "result": plain(result)})


async def invites(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    count, hours = body.get("count", 1), body.get("hours", 72)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_INVITES:
        raise ValidationFailed(f"count must be a whole number from 1 to {MAX_INVITES}")
    if not isinstance(hours, int) or isinstance(hours, bool) or \
            not 1 <= hours <= MAX_INVITE_HOURS:
        raise ValidationFailed(f"hours must be a whole number from 1 to {MAX_INVITE_HOURS}")
    accounts = state.context.accounts
    tokens = [await accounts.mint_invite(hours * 3600) for _ in range(count)]
    record(state, "admin.invites", count=count, hours=hours)
    return json_response({"invites": tokens, "hours": hours})


# --- the audit log ---------------------------------------------------------------------


async def audit_verify(request: web.Request) -> web.Response:
    state = _state(request)
    report = await state.context.protection.audit.verify()
    return json_response({"report": plain(report)})


async def audit_export(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    audit = state.context.protection.audit
    try:
        after = int(request.query.get("after", 0))
    except ValueError as exc:
        raise ValidationFailed("after must be a record number") from exc
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    record(state, "admin.audit_export", after=after)
    async for chunk in _lines(audit.export_jsonl(after)):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _lines(records: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """Records (JSON lines) several to a write."""
    page: list[str] = []
    async for text in records:
        page.append(text.rstrip("\n"))
        if len(page) >= EXPORT_PAGE:
            yield ("\n".join(page) + "\n").encode()
            page = []
    if page:
        yield ("\n".join(page) + "\n").encode()


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/api/status", status)
    r.add_get("/admin/api/alerts", alerts)
    r.add_get("/admin/api/blocks", blocks)
    r.add_post("/admin/api/blocks/{block_id}/lift", lift)
    r.add_get("/admin/api/deny", deny_rules)
    r.add_post("/admin/api/deny", deny)
    r.add_delete("/admin/api/deny", allow)
    r.add_post("/admin/api/reload", reload)
    r.add_post("/admin/api/invites", invites)
    r.add_get("/admin/api/audit/verify", audit_verify)
    r.add_get("/admin/api/audit/export", audit_export)


__all__ = [
    "add_routes",
    "parse_cidr",
    "record",
]
