"""The route table's metadata is complete, and enforced before any handler runs."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from veil.protocol import Codec, to_builtins
from veil.protocol.requests import Request, UsernameRequest
from veil.server.config import ServerConfig
from veil.server.errors import Unauthorized
from veil.server.http import openapi
from veil.server.http.app import create_app, guard
from veil.server.http.context import CONTEXT, json_response
from veil.server.http.endpoint import ANY_QUERY, Auth, Call, IntQuery, Route
from veil.server.http.routes import ROUTES
from veil.server.storage.base import DeviceRecord

ACCOUNT = b"a" * 16
TOKEN = b"t" * 32
DEVICE = DeviceRecord(ACCOUNT, 1, 1, b"h" * 32, b"i" * 33)
METADATA = ("auth", "query", "body", "rate_limit", "audit")
SLOT = re.compile(r"[a-z][a-z_.]*")


def basic(token: bytes = TOKEN) -> str:
    user = f"{ACCOUNT.hex()}.1:{base64.b64encode(token).decode()}"
    return "Basic " + base64.b64encode(user.encode()).decode()


class Accounts:
    """Credentials of one device; counts the checks so a test can tell they ran."""

    def __init__(self) -> None:
        self.checked = 0

    async def authenticate(
        self, account_id: bytes, device_id: int, token: bytes, *, cache: bool = True
    ) -> DeviceRecord:
        self.checked += 1
        if (account_id, device_id, token) != (ACCOUNT, 1, TOKEN):
            raise Unauthorized("invalid credentials")
        return DEVICE


class Untouchable:
    """A service no request in these tests may reach."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a handler ran: service.{name}")


def context(accounts: Accounts) -> Any:
    config = ServerConfig()
    return SimpleNamespace(
        config=config, codec=Codec(config.wire_limits()), accounts=accounts,
        keys=Untouchable(), messages=Untouchable(), storage=Untouchable(), ca=Untouchable(),
        bus=Untouchable(), connections=0, sealed_connections=0,
    )


@pytest.fixture
async def real_app() -> AsyncIterator[tuple[TestClient[Any, Any], Accounts]]:
    """The real route table on services that fail the test if a handler reaches them."""
    accounts = Accounts()
    async with TestClient(TestServer(create_app(context(accounts)))) as client:
        yield client, accounts


def concrete(path: str) -> str:
    return (path.replace("{account_id}", ACCOUNT.hex()).replace("{device_id}", "1")
            .replace("{id}", "1").replace("{target}", ACCOUNT.hex()).replace("{username}", "alice")
            .replace("{group_id}", "ab" * 16).replace("{channel_id}", "ab" * 10)
            .replace("{blob_id}", "ab" * 16))


# ---- every route declares everything --------------------------------------------------------
def test_metadata_fields_have_no_defaults():
    fields = {f.name: f for f in dataclasses.fields(Route)}
    for name in METADATA:
        assert fields[name].default is dataclasses.MISSING, name
        assert fields[name].default_factory is dataclasses.MISSING, name


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_declares_all_metadata(route: Route):
    config = ServerConfig()
    assert isinstance(route.auth, Auth)
    assert route.query == ANY_QUERY or (
        isinstance(route.query, tuple) and all(isinstance(q, IntQuery) for q in route.query)
    )
    if route.query != ANY_QUERY:
        for q in route.query:  # bounds resolve (named ServerConfig fields exist)
            schema = q.json_schema(config)
            assert schema["minimum"] <= schema["default"] <= schema["maximum"]
    assert route.body is None or issubclass(route.body, Request)
    assert all(code < 400 for code in route.responses) or route.responses
    assert SLOT.fullmatch(route.rate_limit), route.rate_limit
    assert SLOT.fullmatch(route.audit), route.audit
    assert set(route.path_params) == set(re.findall(r"{(\w+)}", route.path))


def test_openapi_carries_the_slots():
    config = ServerConfig()
    doc = openapi.document(ROUTES, Codec(config.wire_limits()), config)
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["x-veil-rate-limit"] == route.rate_limit
        assert op["x-veil-audit"] == route.audit
    fetch = doc["paths"]["/v1/messages"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["maximum"] for p in fetch} == {
        "limit": config.fetch_limit, "after": (1 << 53) - 1}


# ---- enforcement on the real table ----------------------------------------------------------
DEVICE_ROUTES = [r for r in ROUTES if r.auth is Auth.DEVICE]
CHECKED_QUERY = [r for r in ROUTES if r.query != ANY_QUERY]


@pytest.mark.parametrize("route", DEVICE_ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_device_routes_cannot_be_reached_without_credentials(
    real_app: tuple[TestClient[Any, Any], Accounts], route: Route
):
    client, accounts = real_app
    for headers in ({}, {"Authorization": basic(b"w" * 32)}):
        async with client.request(route.method, concrete(route.path), headers=headers) as r:
            assert r.status == 401
            if route.method != "HEAD":  # a HEAD answer has no body
                assert (await r.json())["error"]["code"] == "unauthorized"
            assert r.headers["WWW-Authenticate"] == 'Basic realm="veil"'
    assert accounts.checked == 1  # the wrong token was checked; no handler ran


@pytest.mark.parametrize("route", CHECKED_QUERY, ids=lambda r: f"{r.method} {r.path}")
async def test_unknown_query_parameters_are_refused(
    real_app: tuple[TestClient[Any, Any], Accounts], route: Route
):
    client, accounts = real_app
    async with client.request(route.method, concrete(route.path) + "?bogus=1",
                              headers={"Authorization": basic()}) as r:
        assert r.status == 400
        if route.method != "HEAD":  # a HEAD answer has no body
            assert (await r.json())["error"] == {
                "code": "bad_request", "message": "unknown query parameter 'bogus'"}
    assert accounts.checked == 0  # refused before the credentials are even looked at


# ---- enforcement on a route of our own ------------------------------------------------------
async def _echo(call: Call) -> web.Response:
    return json_response({"device": call.me.device_id, "query": dict(call.query),
                          "body": to_builtins(call.body), "path": dict(call.path)})


PROBE = Route("PUT", "/probe/{n}", _echo, "probe", auth=Auth.DEVICE,
              query=(IntQuery("limit", default="fetch_limit", low=1, high="fetch_limit"),),
              body=UsernameRequest, rate_limit="probe", audit="none", tag="test",
              path_params={"n": int})


@pytest.fixture
async def probe() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    app[CONTEXT] = context(Accounts())
    app.router.add_route(PROBE.method, PROBE.path, guard(PROBE))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_handler_gets_checked_inputs(probe: TestClient[Any, Any]):
    async with probe.put("/probe/7?limit=5", json={"username": "Bob_1"},
                         headers={"Authorization": basic()}) as r:
        assert r.status == 200
        assert await r.json() == {"device": 1, "query": {"limit": 5},
                                  "body": {"username": "Bob_1"}, "path": {"n": 7}}
    async with probe.put("/probe/7", json={"username": "Bob_1"},
                         headers={"Authorization": basic()}) as r:
        assert (await r.json())["query"] == {"limit": ServerConfig().fetch_limit}


@pytest.mark.parametrize(("query", "headers", "body", "status", "code"), [
    ("", {}, b'{"username": "bob"}', 401, "unauthorized"),
    ("?limit=0", {"Authorization": basic()}, b'{"username": "bob"}', 400, "bad_request"),
    ("?limit=x", {"Authorization": basic()}, b'{"username": "bob"}', 400, "bad_request"),
    ("?limit=0", {}, b'{"username": "bob"}', 401, "unauthorized"),  # credentials first
    ("", {"Authorization": basic()}, b"", 400, "bad_request"),
    ("", {"Authorization": basic()}, b"{", 400, "invalid_json"),
    ("", {"Authorization": basic()}, b'{"username": "b"}', 422, "validation_failed"),
    ("?limit=0&x=1", {}, b"{", 400, "bad_request"),  # unknown parameters before all
])
async def test_a_handler_is_not_reached_with_bad_inputs(
    probe: TestClient[Any, Any], query: str, headers: dict[str, str], body: bytes,
    status: int, code: str,
):
    async with probe.put("/probe/7" + query, data=body, headers=headers) as r:
        assert r.status == status
        assert (await r.json())["error"]["code"] == code


async def _who(call: Call) -> web.Response:
    key = call.access_key
    return json_response({"device": None if call.device is None else call.device.device_id,
                          "access_key": None if key is None else key.hex()})


EITHER = Route("GET", "/either", _who, "probe", auth=Auth.DEVICE_OR_ACCESS_KEY, query=(),
               body=None, rate_limit="probe", audit="none", tag="test")


@pytest.mark.parametrize(("headers", "status", "answer"), [
    ({}, 200, {"device": None, "access_key": None}),  # the service judges a missing key
    ({"Veil-Access-Key": base64.b64encode(b"k" * 16).decode()}, 200,
     {"device": None, "access_key": (b"k" * 16).hex()}),
    ({"Authorization": basic()}, 200, {"device": 1, "access_key": None}),
    ({"Authorization": basic(b"w" * 32)}, 401, "unauthorized"),
    ({"Veil-Access-Key": "not base64!"}, 401, "unauthorized"),
    ({"Veil-Access-Key": base64.b64encode(b"k" * 15).decode()}, 401, "unauthorized"),
    ({"Authorization": basic(), "Veil-Access-Key": base64.b64encode(b"k" * 16).decode()},
     400, "bad_request"),
])
async def test_device_or_access_key(
    headers: dict[str, str], status: int, answer: dict[str, Any] | str
):
    app = web.Application()
    app[CONTEXT] = context(Accounts())
    app.router.add_route(EITHER.method, EITHER.path, guard(EITHER))
    async with TestClient(TestServer(app)) as client, \
            client.get("/either", headers=headers) as r:
        assert r.status == status
        body = await r.json()
        assert (body if status == 200 else body["error"]["code"]) == answer
