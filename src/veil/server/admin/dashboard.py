"""The live admin dashboard (issue 13 §4): an HTML page, its script and its style sheet,
all served by the admin listener — nothing is fetched from anywhere else.

The page is inert HTML; ``static/dashboard.js`` fills it from the live stream
(``/admin/api/stream``, server-sent events) and sends the operator's actions to the
admin API with the session's CSRF header. The Content-Security-Policy of every answer
of the listener (:data:`CSP`) allows scripts, styles and connections from the
listener itself only, and no inline script or style at all; the catalogs of both
languages travel in a JSON data block, which is not a script and never runs.

Signing in is a plain form POST of the token (works with scripts off); the answer
sets the session cookie (:mod:`.auth`) and sends the browser back to the page.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Final

from aiohttp import web

from veil import __version__
from veil.server.admin.auth import COOKIE, CSRF_HEADER, set_session_cookie
from veil.server.admin.state import ADMIN
from veil.server.admin.strings import CATALOGS, LANG_COOKIE, choose_language

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
              "data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
              "base-uri 'none'")
STATIC: Final[dict[str, str]] = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
MAX_TOKEN_FORM = 4096


def _static(name: str) -> bytes:
    return resources.files("veil.server.admin").joinpath("static", name).read_bytes()


def _language(request: web.Request) -> str:
    return choose_language(request.cookies.get(LANG_COOKIE),
                           request.headers.get("Accept-Language"))


def _head(lang: str, extra: str = "") -> str:
    text = CATALOGS[lang]
    catalogs = json.dumps(CATALOGS, ensure_ascii=False).replace("</", "<\\/")
    return (
        f'<!doctype html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f'<title data-i18n="title">{html.escape(text["title"])}</title>\n{extra}'
        '<link rel="icon" href="/admin/static/favicon.svg" type="image/svg+xml">\n'
        '<link rel="stylesheet" href="/admin/static/dashboard.css">\n'
        '<script src="/admin/static/dashboard.js" defer></script>\n'
        f'<script type="application/json" id="veil-strings">{catalogs}</script>\n'
        '</head>\n')


def _t(lang: str, key: str) -> str:
    return html.escape(CATALOGS[lang][key])


def _i18n(lang: str, key: str, tag: str = "span", attrs: str = "") -> str:
    return f'<{tag} data-i18n="{key}"{attrs}>{_t(lang, key)}</{tag}>'


def login_page(lang: str, wrong: bool = False) -> str:
    error = (f'<p class="error" role="alert">{_i18n(lang, "login.wrong")}</p>\n'
             if wrong else "")
    return _head(lang) + (
        f'<body class="login" data-lang="{lang}" data-page="login">\n'
        '<header><h1 data-i18n="title">' + _t(lang, "title") + '</h1>'
        f'<button type="button" id="lang" data-i18n="lang.toggle">'
        f'{_t(lang, "lang.toggle")}</button></header>\n'
        '<main><form method="post" action="/admin/login" class="card login-form">\n'
        f'<h2 data-i18n="login.heading">{_t(lang, "login.heading")}</h2>\n{error}'
        f'<label for="token" data-i18n="login.token">{_t(lang, "login.token")}</label>\n'
        '<input type="password" id="token" name="token" autocomplete="current-password" '
        'required autofocus>\n'
        f'<p class="hint" data-i18n="login.hint">{_t(lang, "login.hint")}</p>\n'
        f'<button type="submit" id="login" data-i18n="login.submit">'
        f'{_t(lang, "login.submit")}</button>\n'
        '</form></main>\n</body>\n</html>\n')


def _card(lang: str, key: str, value_html: str, extra: str = "") -> str:
    return (f'<div class="card metric" id="card-{key.split(".")[1]}">'
            f'<h3 data-i18n="{key}">{_t(lang, key)}</h3>'
            f'<p class="value">{value_html}</p>{extra}</div>\n')


def dashboard_page(lang: str, csrf: str, registration: str) -> str:
    meta = f'<meta name="veil-csrf" content="{html.escape(csrf)}">\n'
    mode = html.escape(registration)
    mode_text = CATALOGS[lang].get(f"mode.{registration}", registration)
    cards = (
        _card(lang, "card.traffic", '<span id="rate">–</span>')
        + _card(lang, "card.latency", '<span id="p50">–</span> / <span id="p99">–</span> '
                f'<small data-i18n="unit.ms">{_t(lang, "unit.ms")}</small>')
        + _card(lang, "card.connections", '<span id="connections">–</span>',
                '<ul class="kinds" id="connection-kinds"></ul>')
        + _card(lang, "card.alerts", '<span id="alerts-total">–</span>')
        + _card(lang, "card.blocks", '<span id="blocks-total">–</span>')
        + _card(lang, "card.messages", '<span id="stored">–</span> / '
                '<span id="delivered">–</span>')
        + _card(lang, "card.uptime", '<span id="uptime">–</span>'))
    charts = "".join(
        f'<figure class="card chart"><figcaption data-i18n="{key}">{_t(lang, key)}'
        f'</figcaption><canvas id="{cid}" width="640" height="140"></canvas></figure>\n'
        for key, cid in (("chart.traffic", "chart-rate"), ("chart.latency", "chart-p99")))

    def table(name: str, columns: list[str], none_key: str) -> str:
        head = "".join(f'<th data-i18n="{c}">{_t(lang, c)}</th>' for c in columns)
        return (f'<section class="card list"><h2 data-i18n="{name}.heading">'
                f'{_t(lang, name + ".heading")}</h2>\n'
                f'<table id="{name}"><thead><tr>{head}</tr></thead><tbody></tbody></table>\n'
                f'<p class="none" id="{name}-none" data-i18n="{none_key}">'
                f'{_t(lang, none_key)}</p></section>\n')

    blocks = table("blocks", ["blocks.id", "blocks.rule", "blocks.source", "blocks.left",
                              "blocks.count", "blocks.lift"], "blocks.none")
    alerts = table("alerts", ["alerts.rule", "alerts.count", "alerts.source",
                              "alerts.blocked"], "alerts.none")
    deny = (
        '<section class="card list"><h2 data-i18n="deny.heading">'
        f'{_t(lang, "deny.heading")}</h2>\n'
        '<form id="deny-form" class="inline" action="#" autocomplete="off">'
        f'<input id="deny-cidr" name="cidr" required data-i18n-placeholder="deny.cidr" '
        f'placeholder="{_t(lang, "deny.cidr")}" aria-label="{_t(lang, "deny.cidr")}">'
        f'<button type="submit" id="deny-submit" data-i18n="deny.submit">'
        f'{_t(lang, "deny.submit")}</button></form>\n'
        f'<h3 data-i18n="deny.rules">{_t(lang, "deny.rules")}</h3>\n'
        '<ul id="rules"></ul>'
        f'<p class="none" id="rules-none" data-i18n="deny.none">{_t(lang, "deny.none")}</p>'
        '</section>\n')
    footer = CATALOGS[lang]["footer"].format(version=__version__)
    return _head(lang, meta) + (
        f'<body data-lang="{lang}" data-page="dashboard" data-version="{__version__}" '
        f'data-registration="{mode}" data-csrf-header="{CSRF_HEADER}">\n'
        f'<header><h1 data-i18n="title">{_t(lang, "title")}</h1>'
        f'<span id="live" class="badge off" data-i18n="offline">{_t(lang, "offline")}</span>'
        f'<span id="registration" class="muted">'
        f'{html.escape(CATALOGS[lang]["registration"].format(mode=mode_text))}</span>'
        '<span class="spacer"></span>'
        f'<button type="button" id="lang" data-i18n="lang.toggle">'
        f'{_t(lang, "lang.toggle")}</button>'
        f'<button type="button" id="logout" data-i18n="logout">{_t(lang, "logout")}'
        '</button></header>\n'
        f'<main>\n<p id="message" role="status" class="message" hidden></p>\n'
        f'<section class="cards">\n{cards}</section>\n'
        f'<section class="charts">\n{charts}</section>\n'
        f'<div class="columns">{blocks}{deny}</div>\n{alerts}</main>\n'
        f'<footer id="footer">{html.escape(footer)}</footer>\n</body>\n</html>\n')


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


async def page(request: web.Request) -> web.Response:
    state = request.app[ADMIN]
    lang = _language(request)
    session = state.auth.session(request)
    if session is None:
        return _html(login_page(lang))
    return _html(dashboard_page(lang, session.csrf, state.context.config.registration))


async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[ADMIN]
    form = await request.post() if (request.content_length or 0) <= MAX_TOKEN_FORM else {}
    given = form.get("token")
    result = state.auth.login(given.strip()) if isinstance(given, str) else None
    if result is None:
        return _html(login_page(_language(request), wrong=True), status=401)
    session_id, _ = result
    response = web.HTTPSeeOther("/admin/")
    set_session_cookie(response, session_id, secure=request.secure)
    return response


async def logout(request: web.Request) -> web.Response:
    state = request.app[ADMIN]
    state.auth.check(request)  # the CSRF header too: another page cannot log one out
    session_id = request.cookies.get(COOKIE)
    if session_id:
        state.auth.logout(session_id)
    response = web.json_response({"logged_out": True})
    response.del_cookie(COOKIE, path="/admin")
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = STATIC.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=content_type,
                        headers={"Cache-Control": "no-cache"})


async def to_page(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin", to_page)
    r.add_get("/", to_page)
    r.add_get("/admin/", page)
    r.add_post("/admin/login", login)
    r.add_post("/admin/logout", logout)
    r.add_get("/admin/static/{name}", static)


__all__ = [
    "CSP",
    "add_routes",
    "dashboard_page",
    "login_page",
]
