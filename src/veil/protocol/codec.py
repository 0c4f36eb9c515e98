"""Decoding and encoding the wire formats, with a server's own limits bound in.

A :class:`Codec` is built once per server (or client) from its :class:`Limits`: for
every type whose bounds an operator configures it derives a subclass with those bounds
(``msgspec.defstruct``), so one declaration in :mod:`veil.protocol.requests` is both
what is enforced and what the OpenAPI document states. Decoding is strict (no unknown
fields in requests, no ``null`` for an absent field, ``true`` is not an integer) and
every failure is a :class:`~veil.protocol.errors.ProtocolError` whose message names
the field path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, UnsetType

from veil.protocol import requests as rq
from veil.protocol.errors import InvalidFields, MalformedJson
from veil.protocol.fields import b64
from veil.protocol.frames import (
    AckFrame,
    ClientFrame,
    GroupSubscribeFrame,
    GroupUnsubscribeFrame,
    SendFrame,
    ServerFrame,
)

__all__ = [
    "Codec",
    "Limits",
    "convert",
    "decode_server_frame",
    "decode_value",
    "encode",
    "given",
    "to_builtins",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The bounds of the wire formats that a server's configuration sets."""

    max_envelope_bytes: int = rq.DEFAULT_MAX_ENVELOPE
    max_devices_per_account: int = rq.DEFAULT_MAX_DEVICES
    max_prekeys_per_upload: int = rq.DEFAULT_MAX_PREKEYS
    max_body_bytes: int = rq.DEFAULT_MAX_BODY
    max_group_message_bytes: int = rq.DEFAULT_MAX_GROUP_MESSAGE
    max_provisioning_bytes: int = rq.DEFAULT_MAX_PROVISIONING


def _derive(base: type[T], fields: list[tuple[str, Any, Any]]) -> type[T]:
    """``base`` with some fields re-declared (same name, so the document is unchanged
    apart from the bounds)."""
    config = base.__struct_config__  # type: ignore[attr-defined]
    options: dict[str, Any] = {
        "kw_only": True, "frozen": config.frozen,
        "forbid_unknown_fields": config.forbid_unknown_fields,
        "omit_defaults": config.omit_defaults,
    }
    if config.tag is not None:
        options |= {"tag": config.tag, "tag_field": config.tag_field}
    derived = msgspec.defstruct(base.__name__, fields, bases=(base,),
                                module=base.__module__, **options)
    derived.__doc__ = base.__doc__
    result: type[T] = derived  # type: ignore[assignment]
    return result


def _bound_types(limits: Limits) -> dict[type[Any], type[Any]]:
    n = limits.max_prekeys_per_upload
    prekey_lists: list[tuple[str, Any, Any]] = [
        ("one_time_prekeys",
         Annotated[list[rq.OneTimePrekey], Meta(max_length=n)] | UnsetType, msgspec.UNSET),
        ("one_time_kem_prekeys",
         Annotated[list[rq.OneTimeKemPrekey], Meta(max_length=n)] | UnsetType, msgspec.UNSET),
    ]
    item = _derive(rq.EnvelopeItem, [(
        "envelope",
        Annotated[bytes, b64(1, limits.max_envelope_bytes, "opaque sealed envelope")],
        msgspec.NODEFAULT,
    )])
    messages = Annotated[list[item],  # type: ignore[valid-type]
                         Meta(min_length=1, max_length=limits.max_devices_per_account)]
    group_message = [(
        "message",
        Annotated[bytes, b64(1, limits.max_group_message_bytes,
                             "an MLS message (MLSMessage), opaque")],
        msgspec.NODEFAULT,
    )]
    return {
        rq.GroupPost: _derive(rq.GroupPost, group_message),
        rq.GroupCommit: _derive(rq.GroupCommit, group_message),
        rq.EnvelopeItem: item,
        rq.PrekeyUpload: _derive(rq.PrekeyUpload, prekey_lists),
        rq.Registration: _derive(rq.Registration, prekey_lists),
        rq.DeviceLink: _derive(rq.DeviceLink, prekey_lists),
        rq.ProvisioningPost: _derive(rq.ProvisioningPost, [(
            "message",
            Annotated[bytes, b64(1, min(limits.max_provisioning_bytes,
                                        rq.relayed_submission_max(limits.max_body_bytes)),
                                 "veil.core.provisioning message, opaque")],
            msgspec.NODEFAULT,
        )]),
        rq.Submission: _derive(rq.Submission, [("messages", messages, msgspec.NODEFAULT)]),
        SendFrame: _derive(SendFrame, [("messages", messages, msgspec.NODEFAULT)]),
        rq.RelayedSubmission: _derive(rq.RelayedSubmission, [(
            "submission",
            Annotated[bytes, b64(1, rq.relayed_submission_max(limits.max_body_bytes),
                                 "veil.core.submission encoding of a sealed submission")],
            msgspec.NODEFAULT,
        )]),
    }


# msgspec's messages, rephrased in the server's words; the path is appended by msgspec
# as " - at `$...`".
_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.S), replacement) for pattern, replacement in (
        (r"Object missing required field `(.{0,40}).*`", "{path} is missing field '\\1'"),
        (r"Object contains unknown field `(.{0,40}).*`", "{path} has unknown field '\\1'"),
        (r"Expected `bytes` of length <= (\d+)", "{path} is larger than \\1 bytes"),
        (r"Expected `bytes` of length >= (\d+)", "{path} is shorter than \\1 bytes"),
        (r"Expected `str` of length <= (\d+)", "{path} is longer than \\1 characters"),
        (r"Expected `str` matching regex '(.*)'", "{path} has the wrong format{rule}"),
        (r"Expected `array` of length <= (\d+)", "{path} has more than \\1 items"),
        (r"Expected `array` of length >= (\d+)", "{path} needs at least \\1 items"),
        (r"Expected `int` >= (-?\d+)", "{path} must be at least \\1"),
        (r"Expected `int` <= (-?\d+)", "{path} must be at most \\1"),
        (r"Invalid base64 encoded string", "{path} is not valid base64"),
        (r"Expected `bytes`, got `(\w+)`", "{path} must be a base64 string, not \\1"),
        (r"Expected `int`, got `(\w+)`", "{path} must be an integer, not \\1"),
        (r"Expected `bool`, got `(\w+)`", "{path} must be a boolean, not \\1"),
        (r"Expected `str`, got `(\w+)`", "{path} must be a string, not \\1"),
        (r"Expected `object`, got `(\w+)`", "{path} must be an object, not \\1"),
        (r"Expected `array`, got `(\w+)`", "{path} must be a list, not \\1"),
        (r"Invalid value .*", "{path} has a value this server does not know"),
        (r"Number out of range", "{path} is a number out of range"),
    )
)


# What the patterns of veil.protocol.fields and .requests mean, for people.
_RULES = {
    "^[A-Za-z0-9_]{3,32}$": "3–32 characters of a-z, A-Z, 0-9 and _",
    "^[0-9a-f]{32}$": "32 lower-case hex digits",
    "^[0-9a-f]{8,128}$": "8–128 lower-case hex digits",
}


def _invalid(exc: msgspec.ValidationError, what: str) -> InvalidFields:
    text = str(exc)
    match = _AT.match(text)
    message, path = (match.group(1), what + match.group(2)) if match else (text, what)
    for pattern, replacement in _REWRITES:
        found = pattern.fullmatch(message)
        if found:
            if "{rule}" in replacement:      # the regex itself is not for people
                known = _RULES.get(found.group(1))
                return InvalidFields(replacement.format(
                    path=path, rule=f": it must be {known}" if known else ""), path)
            return InvalidFields(found.expand(replacement.replace("{path}", path)), path)
    return InvalidFields(f"{path}: {message[:120]}", path)


def given(value: Any) -> Any:
    """An optional field of a decoded document: ``None`` when it was left out
    (``UNSET``), its value otherwise."""
    return None if value is msgspec.UNSET else value


def _malformed(what: str) -> MalformedJson:
    return MalformedJson(f"{what} is not valid JSON")


def _rejected(exc: msgspec.ValidationError, data: bytes | str, what: str) -> Exception:
    """A typed decode stops at the first value of the wrong shape, before reading the
    rest; a document that is not JSON at all is reported as such, whatever its shape.
    Only on the error path, so a valid document is read once."""
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return _malformed(what)
    return _invalid(exc, what)


def decode_value(data: bytes | str, cls: type[T], what: str = "body") -> T:
    """Decode JSON ``data`` as ``cls`` (unbound: the types' default limits)."""
    try:
        return msgspec.json.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        raise _rejected(exc, data, what) from None
    except (msgspec.DecodeError, RecursionError):
        raise _malformed(what) from None


def convert(value: Any, cls: type[T], what: str = "body") -> T:
    """Check an already-decoded JSON value (dicts, lists, str, int) as ``cls``."""
    try:
        return msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, what) from None


_SERVER_FRAMES = msgspec.json.Decoder(ServerFrame)
_FRAME_TYPE = re.compile(r"Invalid value .* - at `\$\.type`$", re.S)


def decode_server_frame(text: bytes | str) -> ServerFrame | None:
    """A frame the server sent; ``None`` for a frame type this version does not know
    (a newer server may send some)."""
    try:
        return _SERVER_FRAMES.decode(text)
    except msgspec.ValidationError as exc:
        if _FRAME_TYPE.match(str(exc)):
            return None
        raise _rejected(exc, text, "frame") from None
    except (msgspec.DecodeError, RecursionError):
        raise _malformed("frame") from None


_ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """JSON of a protocol value (bytes as base64, absent fields left out)."""
    return _ENCODER.encode(value)


def to_builtins(value: Any) -> Any:
    """The JSON value of a protocol value as dicts and lists (for APIs that take those)."""
    return msgspec.to_builtins(value)


class Codec:
    """Strict decoders of the request types and client frames, with ``limits`` bound in."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._bound = _bound_types(self.limits)
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        for cls in (rq.PrekeyUpload, rq.Registration, rq.UsernameRequest, rq.SealedAccess,
                    rq.Submission, rq.RelayedSubmission):
            self._decoders[cls] = msgspec.json.Decoder(self.bound(cls))
        self.client_frames: Any = (self.bound(SendFrame) | AckFrame | GroupSubscribeFrame
                                   | GroupUnsubscribeFrame)
        self._frames = msgspec.json.Decoder(self.client_frames)

    def bound(self, cls: type[T]) -> type[T]:
        """``cls`` with this codec's limits (``cls`` itself if it has none to bind)."""
        return self._bound.get(cls, cls)

    def decode(self, cls: type[T], data: bytes | str, what: str = "body") -> T:
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(self.bound(cls))
        try:
            result: T = decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise _rejected(exc, data, what) from None
        except msgspec.DecodeError:
            raise _malformed(what) from None
        return result

    def decode_client_frame(self, text: bytes | str) -> ClientFrame:
        """A frame a client sent (``send``, ``ack``, ``group_subscribe``,
        ``group_unsubscribe``)."""
        try:
            frame: ClientFrame = self._frames.decode(text)
        except msgspec.ValidationError as exc:
            raise _rejected(exc, text, "frame") from None
        except msgspec.DecodeError:
            raise _malformed("frame") from None
        return frame

    def schemas(self, types: list[Any], ref_template: str) -> tuple[
            tuple[dict[str, Any], ...], dict[str, Any]]:
        """JSON Schemas of ``types`` (bound) and of the components they refer to."""
        return msgspec.json.schema_components(
            [self.bound(t) for t in types], ref_template=ref_template)


