"""Who may use the admin listener (issue 13 §4): the bearer token, or a dashboard session.

The admin API takes ``Authorization: Bearer <token>`` (``DATA/admin/token``), compared
in constant time. The dashboard logs in once with the token (a form POST) and gets a
session cookie — random, HttpOnly, SameSite=Strict, path ``/admin`` — so the token
itself never sits in the browser. A request that changes something and is
authenticated by the cookie must also carry the session's CSRF token in the
``X-Veil-CSRF`` header (the page reads it from a ``<meta>`` tag; another origin cannot)
and, when the browser sends ``Origin``, come from the listener's own origin.

Sessions live in memory (a restart logs the browser out), at most
:data:`MAX_SESSIONS` of them (the oldest goes first), each for :data:`SESSION_S`.
The server keeps only the SHA-256 of a session id, and looks it up by that hash, so a
lookup's timing tells nothing about the ids it holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from veil.server.errors import CsrfRefused, InvalidAdminToken

COOKIE = "veil_admin"
CSRF_HEADER = "X-Veil-CSRF"
MAX_SESSIONS = 64
SESSION_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: float


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class AdminAuth:
    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._token = _digest(token)
        self._clock = clock
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def token_ok(self, given: str) -> bool:
        # Digests of equal length: compare_digest's time depends on neither value.
        return hmac.compare_digest(_digest(given), self._token)

    def login(self, given: str) -> tuple[str, Session] | None:
        """A new session for the right token, else None."""
        if not self.token_ok(given):
            return None
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(24), self._clock() + SESSION_S)
        self._sessions[_digest(session_id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def logout(self, session_id: str) -> None:
        self._sessions.pop(_digest(session_id), None)

    def session(self, request: web.Request) -> Session | None:
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[key]
            return None
        return session

    def check(self, request: web.Request) -> None:
        """Raise unless ``request`` is the operator's (see the module docstring)."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_ok(given.strip()):
                return
            raise InvalidAdminToken("the admin token is wrong")
        session = self.session(request)
        if session is None:
            raise InvalidAdminToken("the admin API needs the admin token "
                                    "(Authorization: Bearer, from DATA/admin/token)")
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise CsrfRefused("the request came from another origin")
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(_digest(given), _digest(session.csrf)):
            raise CsrfRefused("the request lacks this session's CSRF header")


def set_session_cookie(response: web.StreamResponse, session_id: str, secure: bool) -> None:
    response.set_cookie(COOKIE, session_id, path="/admin", httponly=True, samesite="Strict",
                        secure=secure, max_age=SESSION_S)


__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "AdminAuth",
    "Session",
    "set_session_cookie",
]
