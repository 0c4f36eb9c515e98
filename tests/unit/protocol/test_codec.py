"""Strict decoding of the wire formats: unknown fields, wrong types, sizes, the limits a
server binds in; only the protocol's typed errors escape; what is decoded re-encodes to
the same document."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.protocol import (
    Codec,
    InvalidFields,
    Limits,
    MalformedJson,
    ProtocolError,
    decode_server_frame,
    encode,
)
from veil.protocol import requests as rq
from veil.protocol.fields import base64_pattern
from veil.protocol.frames import AckFrame, EnvelopeFrame, KeysLowFrame, SendFrame

CODEC = Codec()
SMALL = Codec(Limits(max_envelope_bytes=8, max_devices_per_account=2, max_prekeys_per_upload=1))
KEY = base64.b64encode(bytes(32)).decode()
ACCOUNT = "ab" * 16


def registration(**extra: Any) -> dict[str, Any]:
    return {"identity_key": KEY, "registration_id": 1, **extra}


@pytest.mark.parametrize(("doc", "words"), [
    ({}, "body is missing field 'identity_key'"),
    (registration(registration_id=True), "body.registration_id must be an integer, not bool"),
    (registration(registration_id=1.0), "body.registration_id must be an integer, not float"),
    (registration(registration_id=0), "body.registration_id must be at least 1"),
    (registration(registration_id=1 << 31), "body.registration_id must be at most"),
    (registration(extra=1), "body has unknown field 'extra'"),
    (registration(**{"x" * 500: 1}), "body has unknown field '" + "x" * 40 + "'"),
    (registration(unrestricted_sealed=1), "body.unrestricted_sealed must be a boolean"),
    (registration(username="a b"), "body.username has the wrong format: it must be 3–32 "
                                   "characters of a-z, A-Z, 0-9 and _"),
    (registration(username="a" * 33), "body.username is longer than 32 characters"),
    (registration(token="AA=="), "body.token is shorter than 32 bytes"),
    (registration(identity_key=base64.b64encode(bytes(300)).decode()),
     "body.identity_key is larger than 256 bytes"),
    (registration(identity_key="not base64!"), "body.identity_key is not valid base64"),
    (registration(identity_key=KEY[:-1]), "body.identity_key is not valid base64"),
    (registration(token=None), "body.token must be a base64 string, not null"),
    (registration(one_time_prekeys=[{"key_id": 1, "key": KEY}, {"key_id": 2}]),
     "body.one_time_prekeys[1] is missing field 'key'"),
    (registration(one_time_prekeys={}), "body.one_time_prekeys must be a list, not object"),
    ([1], "body must be an object, not array"),
])
def test_rejections_name_the_problem(doc: Any, words: str):
    with pytest.raises(InvalidFields) as info:
        CODEC.decode(rq.Registration, json.dumps(doc))
    assert words in info.value.message
    assert info.value.path.startswith("body")


def test_accepts_and_decodes():
    out = CODEC.decode(rq.Registration, json.dumps(registration(
        username="Bob_1", one_time_prekeys=[{"key_id": 3, "key": KEY}])))
    assert out.identity_key == bytes(32) and out.username == "Bob_1"
    assert out.one_time_prekeys == [rq.OneTimePrekey(key_id=3, key=bytes(32))]
    assert out.token is msgspec.UNSET and out.signed_prekey is msgspec.UNSET
    assert isinstance(out, rq.Registration)


@pytest.mark.parametrize("text", [b"", b"{", b"NaN", b"[Infinity]", b"\xff\xfe",
                                  b'{"messages":' + b"[" * 50_000])
def test_not_json(text: bytes):
    with pytest.raises(ProtocolError) as info:
        CODEC.decode(rq.Submission, text)
    assert isinstance(info.value, MalformedJson)


def test_a_servers_limits_are_bound_into_what_it_decodes_and_documents():
    nine = base64.b64encode(bytes(9)).decode()
    body = {"messages": [{"device_id": 1, "envelope": nine}]}
    assert CODEC.decode(rq.Submission, json.dumps(body)).messages[0].envelope == bytes(9)
    with pytest.raises(InvalidFields, match=r"body.messages\[0\].envelope is larger than 8"):
        SMALL.decode(rq.Submission, json.dumps(body))
    three = {"messages": [{"device_id": i, "envelope": "AA=="} for i in (1, 2, 3)]}
    with pytest.raises(InvalidFields, match="more than 2 items"):
        SMALL.decode(rq.Submission, json.dumps(three))
    frame = {"type": "send", "req": 1, "to": ACCOUNT, "messages": three["messages"]}
    with pytest.raises(InvalidFields, match=r"frame.messages has more than 2 items"):
        SMALL.decode_client_frame(json.dumps(frame))
    keys = {"one_time_prekeys": [{"key_id": i, "key": KEY} for i in (1, 2)]}
    with pytest.raises(InvalidFields, match="more than 1 items"):
        SMALL.decode(rq.PrekeyUpload, json.dumps(keys))
    # ... and the document says so.
    _, components = SMALL.schemas([rq.Submission, rq.Registration], "#/{name}")
    envelope = components["EnvelopeItem"]["properties"]["envelope"]
    assert envelope["maxLength"] == 12 and envelope["x-bytes"] == [1, 8]
    assert components["Submission"]["properties"]["messages"]["maxItems"] == 2
    assert components["Registration"]["properties"]["one_time_prekeys"]["maxItems"] == 1
    assert components["Registration"]["additionalProperties"] is False
    assert set(components["Registration"]["required"]) == {"identity_key", "registration_id"}


def test_client_frames():
    send = {"type": "send", "req": 5, "to": ACCOUNT,
            "messages": [{"device_id": 1, "envelope": "eA=="}]}
    frame = CODEC.decode_client_frame(json.dumps(send))
    assert isinstance(frame, SendFrame) and frame.messages[0].envelope == b"x"
    assert CODEC.decode_client_frame(b'{"type":"ack","ids":[1,2]}') == AckFrame(ids=[1, 2])
    for bad, words in [
        (b'{"type":"ack","ids":[]}', "frame.ids needs at least 1 items"),
        (b'{"type":"ack","ids":[0]}', "frame.ids[0] must be at least 1"),
        (b'{"type":"ping"}', "frame.type has a value this server does not know"),
        (b'{"ids":[1]}', "missing field 'type'"),
        (b'{"type":"ack","ids":[1],"req":1}', "frame has unknown field 'req'"),
        (b'{"type":"send","req":1,"to":"AB","messages":[{"device_id":1,"envelope":"eA=="}]}',
         "frame.to has the wrong format"),
    ]:
        with pytest.raises(InvalidFields) as info:
            CODEC.decode_client_frame(bad)
        assert words in info.value.message


def test_server_frames_ignore_what_a_newer_server_adds():
    assert decode_server_frame(b'{"type":"keys_low","one_time_prekeys":1,'
                               b'"one_time_kem_prekeys":2,"new":true}') == KeysLowFrame(
        one_time_prekeys=1, one_time_kem_prekeys=2)
    assert decode_server_frame(b'{"type":"a_frame_from_the_future"}') is None
    with pytest.raises(InvalidFields, match=r"frame\.id must be at least 1"):
        decode_server_frame(b'{"type":"envelope","id":0,"ts":1,"envelope":"eA=="}')
    with pytest.raises(MalformedJson):
        decode_server_frame("{not json")
    frame = EnvelopeFrame(id=7, ts=1234, envelope=b"x")
    assert json.loads(encode(frame)) == {"type": "envelope", "id": 7, "ts": 1234,
                                         "envelope": "eA=="}
    assert decode_server_frame(encode(frame)) == frame


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 5), (1, 1), (2, 4), (16, 16), (1, 100)])
def test_the_documented_base64_pattern_admits_exactly_the_accepted_lengths(low: int, high: int):
    import re
    pattern = re.compile(base64_pattern(low, high))
    for n in range(0, high + 4):
        text = base64.b64encode(bytes(n)).decode()
        assert bool(pattern.fullmatch(text)) == (low <= n <= high), (n, text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(data: bytes):
    for cls in (rq.Registration, rq.Submission, rq.PrekeyUpload, rq.SealedAccess):
        try:
            CODEC.decode(cls, data)
        except ProtocolError:
            pass
    try:
        CODEC.decode_client_frame(data)
    except ProtocolError:
        pass


B64 = base64.b64encode(b"x" * 20).decode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1 << 54) | st.text(max_size=40)
    | st.sampled_from(["send", "ack", ACCOUNT, B64, "AAAAAAAAAAAAAAAAAAAAAA==", "AA"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(
        ["type", "req", "to", "access_key", "messages", "device_id", "envelope", "ids", "x"]),
        inner, max_size=6),
    max_leaves=20,
)
send_like = st.fixed_dictionaries(
    {"type": st.just("send"), "req": st.integers(-1, 5), "to": st.sampled_from([ACCOUNT, "z"]),
     "messages": st.lists(st.fixed_dictionaries(
         {"device_id": st.integers(0, 3), "envelope": st.sampled_from([B64, "AA", "", 5])}),
         max_size=3)},
    optional={"access_key": st.sampled_from(["AAAAAAAAAAAAAAAAAAAAAA==", B64, 1])},
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, send_like))
def test_what_decodes_re_encodes_to_the_same_document(frame: Any):
    """Decoding loses nothing and invents nothing: an accepted frame, encoded again, is
    the document that was sent (absent fields stay absent)."""
    text = json.dumps(frame)
    try:
        decoded = CODEC.decode_client_frame(text)
    except ProtocolError:
        return
    assert json.loads(encode(decoded)) == frame
