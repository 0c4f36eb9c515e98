"""Content kinds (``veil.client.content``; issue 12 §3, §5): each round-trips, each
refuses wrong fields with ``MalformedMessage``, and an unknown kind is kept."""

from __future__ import annotations

import json

import pytest

from veil.client.attachments import Pointer
from veil.client.content import Content
from veil.core.errors import MalformedMessage

ID = "ab" * 16
GROUP = "cd" * 32
POINTER = Pointer("ef" * 16, bytes(32), bytes(32), bytes(32), 1234, "a.pdf",
                  "application/pdf").to_json()


@pytest.mark.parametrize("content", [
    Content(ID, 1, "hello", reply_to="12" * 16, attachments=(POINTER,), expire_s=3600),
    Content(ID, 1, "new text", kind="edit", target="12" * 16),
    Content(ID, 1, "", kind="delete", target="12" * 16),
    Content(ID, 1, "", kind="reaction", target="12" * 16, emoji="👍"),
    Content(ID, 1, "", kind="reaction", target="12" * 16, emoji=None),
    Content(ID, 1, "", kind="receipt", receipt="read", ids=("12" * 16, "34" * 16),
            group=GROUP),
    Content(ID, 1, "", kind="typing", typing=False),
    Content(ID, 1, "", kind="timer", expire_s=0),
    Content(ID, 1, "", kind="timer", expire_s=4 * 7 * 24 * 3600),
])
def test_every_kind_round_trips(content: Content) -> None:
    assert Content.decode(content.encode()) == content


def _with(kind: str, **fields: object) -> bytes:
    body: dict[str, object] = {"v": 1, "id": ID, "ts": 1, "kind": kind, "text": ""}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize("raw", [
    _with("reaction", tg="12" * 16, em="ok"),                 # not an emoji
    _with("reaction", tg="12" * 16, em="👍 👍"),
    _with("reaction", em="👍"),                                # no target
    _with("edit", tg=5, text="x"),
    _with("delete", tg="12" * 16, text="a deletion with text"),
    _with("receipt", rc="seen", ids=["12" * 16]),
    _with("receipt", rc="read", ids=[]),
    _with("receipt", rc="read", ids=["12" * 16] * 101),
    _with("receipt", rc="read", ids=["12" * 16], g="not a group"),
    _with("typing", ty="yes"),
    _with("timer", exp=10),                                    # below 30 s
    _with("timer", exp=5 * 7 * 24 * 3600),                     # above four weeks
    _with("timer"),
    _with("text", att=[{"id": "nothex"}]),
    _with("text", att=[POINTER] * 11),
    _with("text", exp=True),
    _with("text", re=["not", "an", "id"]),
    _with("reaction", tg="\ud800" * 32, em="👍"),             # a lone surrogate (review)
    _with("receipt", rc="read", ids=["AB" * 16]),              # ids are lower-case hex
])
def test_a_known_kind_with_wrong_fields_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Content.decode(raw)


def test_an_unknown_kind_is_kept_without_its_fields() -> None:
    raw = _with("poll", question="lunch?", options=["a", "b"], tg=12345)
    content = Content.decode(raw)
    assert (content.kind, content.known, content.target) == ("poll", False, None)
    assert Content(ID, 1, "", kind="text").known


def test_an_envelope_id_must_be_hex_too() -> None:
    raw = json.dumps({"v": 1, "id": "\ud800" * 32, "ts": 1, "kind": "text",
                      "text": "x"}).encode()
    with pytest.raises(MalformedMessage):
        Content.decode(raw)
