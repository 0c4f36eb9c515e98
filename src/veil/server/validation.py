"""Strict validation of JSON request bodies and WebSocket frames against small schemas.

One schema object both checks a decoded JSON value and describes itself as JSON Schema
for the OpenAPI document, so the documentation cannot drift from what is enforced.
Unknown fields, wrong types (``true`` is not an integer), out-of-range numbers and
oversized strings or lists are rejected with :class:`ValidationFailed` naming the path.
"""

from __future__ import annotations

import json
import re
from typing import Any

from veil.server.encoding import b64decode
from veil.server.errors import InvalidJson, ValidationFailed

# A location in a document: a name, or (parent, key or index). Rendered only for errors,
# so validating a valid document builds no strings.
Path = Any


def _fmt(path: Path) -> str:
    if isinstance(path, tuple):
        parent, key = path
        return f"{_fmt(parent)}[{key}]" if isinstance(key, int) else f"{_fmt(parent)}.{key}"
    return str(path)


class Schema:
    description: str = ""

    def validate(self, value: Any, path: Path) -> Any:
        raise ValidationFailed(f"{_fmt(path)}: no schema")  # pragma: no cover - abstract

    def json_schema(self) -> dict[str, Any]:
        return {}

    def _doc(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            out["description"] = self.description
        return out


class Int(Schema):
    def __init__(self, minimum: int, maximum: int, description: str = "") -> None:
        self.minimum, self.maximum, self.description = minimum, maximum, description

    def validate(self, value: Any, path: Path) -> int:
        # JSON Schema's "integer" includes 1.0; JSON has one number type.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationFailed(f"{_fmt(path)} must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise ValidationFailed(
                f"{_fmt(path)} must be between {self.minimum} and {self.maximum}"
            )
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "integer", "minimum": self.minimum, "maximum": self.maximum})


class Bool(Schema):
    def __init__(self, description: str = "") -> None:
        self.description = description

    def validate(self, value: Any, path: Path) -> bool:
        if not isinstance(value, bool):
            raise ValidationFailed(f"{_fmt(path)} must be a boolean")
        return value

    def json_schema(self) -> dict[str, Any]:
        return self._doc({"type": "boolean"})


class Str(Schema):
    def __init__(
        self, max_length: int, pattern: str | None = None, description: str = "",
        enum: tuple[str, ...] | None = None,
    ) -> None:
        self.max_length, self.description, self.enum = max_length, description, enum
        self.pattern = re.compile(pattern) if pattern else None

    def validate(self, value: Any, path: Path) -> str:
        if not isinstance(value, str):
            raise ValidationFailed(f"{_fmt(path)} must be a string")
        if len(value) > self.max_length:
            raise ValidationFailed(f"{_fmt(path)} is longer than {self.max_length} characters")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise ValidationFailed(f"{_fmt(path)} has the wrong format")
        if self.enum is not None and value not in self.enum:
            raise ValidationFailed(f"{_fmt(path)} must be one of {', '.join(self.enum)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.pattern is not None:
            # Enforced with fullmatch; JSON Schema patterns match anywhere unless anchored.
            out["pattern"] = f"^(?:{self.pattern.pattern})$"
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return self._doc(out)


class Bytes(Schema):
    """Base64 text on the wire, ``bytes`` after validation."""

    def __init__(self, min_bytes: int, max_bytes: int, description: str = "") -> None:
        self.min_bytes, self.max_bytes, self.description = min_bytes, max_bytes, description

    def validate(self, value: Any, path: Path) -> bytes:
        if not isinstance(value, str):
            raise ValidationFailed(f"{_fmt(path)} must be a base64 string")
        # Check the encoded length first so a huge string is never decoded.
        # A field over its declared size is 422 like any other schema violation; 413 is
        # for a whole body over the server's limit.
        if len(value) > 4 * ((self.max_bytes + 2) // 3):
            raise ValidationFailed(f"{_fmt(path)} is larger than {self.max_bytes} bytes")
        try:
            raw = b64decode(value)
        except ValidationFailed:
            raise ValidationFailed(f"{_fmt(path)} is not valid base64") from None
        if len(raw) < self.min_bytes:
            raise ValidationFailed(f"{_fmt(path)} is shorter than {self.min_bytes} bytes")
        if len(raw) > self.max_bytes:
            raise ValidationFailed(f"{_fmt(path)} is larger than {self.max_bytes} bytes")
        return raw

    def json_schema(self) -> dict[str, Any]:
        # Lengths in characters of the encoded form, and a pattern that admits exactly
        # the base64 strings of min_bytes..max_bytes bytes, so the document's valid
        # strings are the ones this accepts.
        return self._doc({
            "type": "string", "contentEncoding": "base64",
            "minLength": 4 * ((self.min_bytes + 2) // 3),
            "maxLength": 4 * ((self.max_bytes + 2) // 3),
            "pattern": base64_pattern(self.min_bytes, self.max_bytes),
            "x-bytes": [self.min_bytes, self.max_bytes],
        })


_B64 = "[A-Za-z0-9+/]"
# The last group of an encoding of 3g + 1 and 3g + 2 bytes.
_TAILS = ("", f"{_B64}{{2}}==", f"{_B64}{{3}}=")


def _quantifier(low: int, high: int) -> str:
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def base64_pattern(min_bytes: int, max_bytes: int) -> str:
    """A JSON Schema pattern (ECMA-262, anchored) matching exactly the padded standard
    base64 encodings of ``min_bytes`` to ``max_bytes`` bytes."""
    options = []
    for rest, tail in enumerate(_TAILS):
        # 3g + rest bytes: g full groups of four characters, then the tail.
        low = max(0, -(-(min_bytes - rest) // 3))
        high = (max_bytes - rest) // 3
        if high >= low and 3 * high + rest >= min_bytes:
            groups = "" if high == 0 else f"(?:{_B64}{{4}}){_quantifier(low, high)}"
            if groups or tail:
                options.append(groups + tail)
    if min_bytes == 0:
        options.append("")
    return "^(?:" + "|".join(dict.fromkeys(options)) + ")$"


class List(Schema):
    def __init__(
        self, item: Schema, max_items: int, min_items: int = 0, description: str = ""
    ) -> None:
        self.item, self.max_items, self.min_items = item, max_items, min_items
        self.description = description

    def validate(self, value: Any, path: Path) -> list[Any]:
        if not isinstance(value, list):
            raise ValidationFailed(f"{_fmt(path)} must be a list")
        if len(value) > self.max_items:
            raise ValidationFailed(f"{_fmt(path)} has more than {self.max_items} items")
        if len(value) < self.min_items:
            raise ValidationFailed(f"{_fmt(path)} needs at least {self.min_items} items")
        return [self.item.validate(v, (path, i)) for i, v in enumerate(value)]

    def json_schema(self) -> dict[str, Any]:
        return self._doc({
            "type": "array", "items": self.item.json_schema(),
            "minItems": self.min_items, "maxItems": self.max_items,
        })


class Obj(Schema):
    """A JSON object with a closed set of fields; ``required`` names the mandatory ones."""

    def __init__(
        self, fields: dict[str, Schema], required: tuple[str, ...] = (), description: str = ""
    ) -> None:
        self.fields, self.required, self.description = fields, required, description
        self._names = frozenset(fields)
        self._required = frozenset(required)

    def validate(self, value: Any, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationFailed(f"{_fmt(path)} must be an object")
        keys = value.keys()
        if not keys <= self._names:
            unknown = min(str(k) for k in keys - self._names)
            raise ValidationFailed(f"{_fmt(path)} has unknown field {unknown[:40]!r}")
        if not self._required <= keys:
            missing = min(self._required - keys)
            raise ValidationFailed(f"{_fmt(path)} is missing field {missing!r}")
        fields = self.fields
        return {k: fields[k].validate(v, (path, k)) for k, v in value.items()}

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k: s.json_schema() for k, s in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            out["required"] = list(self.required)
        return self._doc(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(body: bytes | str, what: str = "body") -> Any:
    """Decode UTF-8 JSON (no NaN/Infinity); anything else is :class:`InvalidJson`."""
    try:
        return _DECODER.decode(body.decode() if isinstance(body, bytes) else body)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"{what} is not valid JSON") from exc


def parse_json(body: bytes | str, schema: Schema, what: str = "body") -> dict[str, Any]:
    """Decode ``body`` as JSON and validate it against ``schema``."""
    result: dict[str, Any] = schema.validate(load_json(body, what), what)
    return result

__all__ = [
    "Bool",
    "Bytes",
    "Int",
    "List",
    "Obj",
    "Schema",
    "Str",
    "load_json",
    "parse_json",
]
