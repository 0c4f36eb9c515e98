"""The rotating key of the audit layer's keyed hashes (issue 13 §5).

Identifiers — an address, an account — appear in audit records, alerts and blocks only
as ``keyed(value)``: HMAC-SHA256 under a secret key, cut to 16 hex characters. Whoever
holds the key can test a guess ("was it 192.0.2.7?"); nobody else can. The key lives in
``DATA/audit/keys.json`` (mode 0600) and is replaced every ``key_rotation_days``; the
previous key is kept one more period only (a hash taken just before the rotation can
still be matched), then deleted. Once a key is gone, the records hashed under it can no
longer be tied to anyone, which is the point: old security events stay countable and
verifiable, not attributable.

Bytes are hashed as their hex text, so ``keyed(b)`` equals ``keyed(b.hex())``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("veil.server.protection")

KEYS_FILE = "keys.json"
DAY_MS = 24 * 3600 * 1000
HEX_CHARS = 16
# Hashes of recent values, per key: a send frame names its recipient, and hashing it
# again for every frame was a measurable share of the layers' cost (bench/attack.py).
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Key:
    epoch: int
    created_ms: int
    secret: bytes


def _digest(secret: bytes, value: str | bytes) -> str:
    text = value.hex() if isinstance(value, bytes) else value
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:HEX_CHARS]


class AuditKeys:
    """The current key (and the previous one, for one period), loaded when first used."""

    def __init__(self, path: Path, rotation_days: int, clock_ms: Callable[[], int],
                 on_rotate: Callable[[int], None] | None = None) -> None:
        self._path = path
        self._period_ms = rotation_days * DAY_MS
        self._clock_ms = clock_ms
        self._keys: list[_Key] | None = None  # newest first, at most two
        self.on_rotate = on_rotate
        self._cache: dict[str | bytes, str] = {}
        self._cache_epoch = -1

    @property
    def epoch(self) -> int:
        return self._current().epoch

    def keyed(self, value: str | bytes) -> str:
        current = self._current()
        cache = self._cache
        if self._cache_epoch != current.epoch or len(cache) >= _CACHE_MAX:
            cache.clear()  # a rotation makes every cached hash stale
            self._cache_epoch = current.epoch
        digest = cache.get(value)
        if digest is None:
            digest = cache[value] = _digest(current.secret, value)
        return digest

    def keyed_all(self, value: str | bytes) -> list[str]:
        """The value's hash under every key still kept, newest first (to look for an
        identifier the operator knows in records of the last two periods)."""
        self._current()
        assert self._keys is not None
        return [_digest(k.secret, value) for k in self._keys]

    def _current(self) -> _Key:
        if self._keys is None:
            self._keys = self._read()
            if not self._keys:
                self._keys = [_Key(1, self._clock_ms(), secrets.token_bytes(32))]
                self._write()
        now = self._clock_ms()
        current = self._keys[0]
        if now >= current.created_ms + self._period_ms:
            retired = current
            current = _Key(retired.epoch + 1, now, secrets.token_bytes(32))
            # The key before the retired one goes, and the retired one too when its
            # period ended a whole period ago (a server that was down that long).
            keep = now < retired.created_ms + 2 * self._period_ms
            self._keys = [current, retired] if keep else [current]
            self._write()
            log.info("audit: the keyed-hash key was rotated (epoch %d)", current.epoch)
            if self.on_rotate is not None:
                self.on_rotate(current.epoch)
        return current

    def _read(self) -> list[_Key]:
        try:
            raw = json.loads(self._path.read_text())
            keys = [_Key(int(k["epoch"]), int(k["created_ms"]), bytes.fromhex(k["key"]))
                    for k in raw["keys"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            log.error("audit: %s is unreadable; starting a new keyed-hash key", self._path)
            return []
        keys.sort(key=lambda k: -k.epoch)
        return keys[:2]

    def _write(self) -> None:
        assert self._keys is not None
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".new")
        data = json.dumps({"keys": [{"epoch": k.epoch, "created_ms": k.created_ms,
                                     "key": k.secret.hex()} for k in self._keys]}).encode()
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)


__all__ = [
    "HEX_CHARS",
    "KEYS_FILE",
    "AuditKeys",
]
