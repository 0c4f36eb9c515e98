"""Strict JSON validation: unknown fields, wrong types, sizes; only typed errors escape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.server.config import ServerConfig
from veil.server.errors import InvalidJson, PayloadTooLarge, ServerError, ValidationFailed
from veil.server.http.frames import fast_ack, fast_send
from veil.server.http.schemas import build_schemas
from veil.server.validation import Bool, Bytes, Int, List, Obj, Str, load_json, parse_json

SCHEMA = Obj(
    {"n": Int(0, 10), "flag": Bool(), "name": Str(5, r"[a-z]+"),
     "blob": Bytes(2, 4), "items": List(Int(0, 1), 3)},
    required=("n",),
)


@pytest.mark.parametrize(("doc", "error", "words"), [
    ({}, ValidationFailed, "missing field 'n'"),
    ({"n": True}, ValidationFailed, "body.n must be an integer"),
    ({"n": 11}, ValidationFailed, "between 0 and 10"),
    ({"n": 1, "extra": 1}, ValidationFailed, "unknown field 'extra'"),
    ({"n": 1, "flag": 1}, ValidationFailed, "boolean"),
    ({"n": 1, "name": "ABC"}, ValidationFailed, "wrong format"),
    ({"n": 1, "name": "abcdef"}, ValidationFailed, "longer than 5"),
    ({"n": 1, "blob": "AA=="}, ValidationFailed, "shorter than 2"),
    ({"n": 1, "blob": "AAAAAAAA"}, ValidationFailed, "larger than 4"),
    ({"n": 1, "blob": "AA"}, ValidationFailed, "not valid base64"),
    ({"n": 1, "items": [0, 0, 0, 0]}, ValidationFailed, "more than 3"),
    ({"n": 1, "items": [0, 2]}, ValidationFailed, "body.items[1]"),
    ([1], ValidationFailed, "must be an object"),
])
def test_rejections_name_the_problem(doc: Any, error: type[ServerError], words: str):
    with pytest.raises(error) as info:
        parse_json(json.dumps(doc), SCHEMA)
    assert words in info.value.message


def test_accepts_and_decodes():
    out = parse_json(b'{"n": 3, "blob": "AAAA", "items": [1]}', SCHEMA)
    assert out == {"n": 3, "blob": b"\x00\x00\x00", "items": [1]}


@pytest.mark.parametrize("text", [b"", b"{", b"NaN", b"[Infinity]", b"\xff\xfe", b"[" * 50_000])
def test_not_json(text: bytes):
    with pytest.raises(InvalidJson):
        load_json(text)


def test_json_schema_is_closed():
    doc = SCHEMA.json_schema()
    assert doc["additionalProperties"] is False and doc["required"] == ["n"]
    assert doc["properties"]["n"] == {"type": "integer", "minimum": 0, "maximum": 10}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_documented_errors(data: bytes):
    schemas = build_schemas(ServerConfig())
    for schema in (schemas.registration, schemas.submission, schemas.ws_send):
        try:
            parse_json(data, schema)
        except (InvalidJson, ValidationFailed, PayloadTooLarge):
            pass


CONFIG = ServerConfig()
SCHEMAS = build_schemas(CONFIG)
B64 = base64.b64encode(b"x" * 20).decode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1 << 54) | st.text(max_size=40)
    | st.sampled_from(["send", "ack", "a" * 32, B64, "AAAAAAAAAAAAAAAAAAAAAA==", "AA"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(
        ["type", "req", "to", "access_key", "messages", "device_id", "envelope", "ids", "x"]),
        inner, max_size=6),
    max_leaves=20,
)
send_like = st.fixed_dictionaries(
    {"type": st.just("send"), "req": st.integers(-1, 5), "to": st.sampled_from(["a" * 32, "z"]),
     "messages": st.lists(st.fixed_dictionaries(
         {"device_id": st.integers(0, 3), "envelope": st.sampled_from([B64, "AA", "", 5])}),
         max_size=3)},
    optional={"access_key": st.sampled_from(["AAAAAAAAAAAAAAAAAAAAAA==", B64, 1])},
)


def _generic(schema: Any, frame: Any) -> Any:
    try:
        return schema.validate(frame, "frame")
    except (ValidationFailed, PayloadTooLarge):
        return None


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, send_like))
def test_fast_paths_agree_with_the_schemas(frame: Any):
    """A fast path may decline (None) but must never accept what the schema rejects,
    and when it accepts it must return exactly what the schema returns."""
    if not isinstance(frame, dict):
        return
    fast = fast_send(frame, CONFIG.max_envelope_bytes, CONFIG.max_devices_per_account)
    if fast is not None:
        assert fast == _generic(SCHEMAS.ws_send, frame)
    if frame.get("type") == "send" and _generic(SCHEMAS.ws_send, frame) is not None:
        assert fast is not None, "the fast path declined a valid frame"
    ack = fast_ack(frame)
    if ack is not None:
        assert ack == _generic(SCHEMAS.ws_ack, frame)["ids"]
