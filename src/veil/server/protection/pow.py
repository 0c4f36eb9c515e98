"""Registration proof of work, hashcash style (issue 13 §2, registration mode ``pow``).

``GET /v1/accounts/challenge`` hands out a *stateless* challenge: its issue time, its
difficulty and a random salt, MAC'd with a secret of this process, so the server keeps
nothing per challenge handed out (a flood of challenge requests costs no memory). A
client finds a nonce such that SHA-256(challenge ":" nonce) starts with ``bits`` zero
bits and sends both in the registration body; the server checks the MAC, the expiry
(``pow_challenge_ttl_s``) and the work, and remembers the challenge until it expires so
that one solution registers one account (replay refused).

The memory of used challenges is bounded: when it is full the oldest entry goes, and
every challenge issued at or before that entry's time is refused from then on (a
*floor*), so an evicted challenge can never be replayed — at worst a client whose
challenge is older than the floor fetches a new one.

Difficulty follows registration pressure: at rest ``pow_min_bits``; one more bit for
each doubling of the (exponentially decayed, one-minute) rate of registrations above
``REST_PER_MIN``, up to ``pow_max_bits``. Only verified registrations count — fetching
challenges is free, so counting them would let anyone raise everyone's cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from veil.core.proof_of_work import leading_zero_bits, solve, work
from veil.server.errors import InvalidProofOfWork
from veil.server.protection.settings import LimitSettings

VERSION = "v1"
REST_PER_MIN = 10.0  # registrations a minute a server sees without anyone pushing
PRESSURE_WINDOW_S = 60.0
MAX_USED = 100_000  # used challenges remembered at most
MAX_NONCE = 64  # characters of a nonce


@dataclass(frozen=True)
class Challenge:
    text: str  # what the client hashes with its nonce
    bits: int
    expires_in_s: int


class ProofOfWork:
    """Challenges, verification and difficulty (``protection.pow``)."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float],
                 clock_ms: Callable[[], int], secret: bytes | None = None,
                 max_used: int = MAX_USED) -> None:
        self.settings = settings
        self.clock = clock
        self.clock_ms = clock_ms
        self._secret = secret or os.urandom(32)
        self._max_used = max_used
        self._used: OrderedDict[bytes, int] = OrderedDict()  # mac -> issued ms
        self._floor_ms = -1
        self._pressure = 0.0  # decayed registrations per window
        self._pressure_at = clock()

    # ---- difficulty -----------------------------------------------------------------
    def _decayed(self) -> float:
        now = self.clock()
        self._pressure *= math.exp(-max(0.0, now - self._pressure_at) / PRESSURE_WINDOW_S)
        self._pressure_at = now
        return self._pressure

    def record_registration(self) -> None:
        self._pressure = self._decayed() + 1.0

    def bits(self) -> int:
        low, high = self.settings.pow_min_bits, self.settings.pow_max_bits
        pressure = self._decayed()
        if pressure <= REST_PER_MIN:
            return low
        return min(high, low + math.ceil(math.log2(pressure / REST_PER_MIN)))

    # ---- challenges ------------------------------------------------------------------
    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:16]

    def challenge(self) -> Challenge:
        bits = self.bits()
        salt = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
        body = f"{VERSION}.{self.clock_ms()}.{bits}.{salt}"
        mac = base64.urlsafe_b64encode(self._mac(body)).decode().rstrip("=")
        return Challenge(f"{body}.{mac}", bits, self.settings.pow_challenge_ttl_s)

    def verify(self, challenge: str, nonce: str) -> None:
        """Accept a solved challenge once, or raise InvalidProofOfWork."""
        parts = challenge.split(".")
        if len(parts) != 5 or parts[0] != VERSION or not 0 < len(nonce) <= MAX_NONCE:
            raise InvalidProofOfWork("the proof of work is malformed")
        body = ".".join(parts[:4])
        try:
            issued, bits = int(parts[1]), int(parts[2])
            mac = base64.urlsafe_b64decode(parts[4] + "=" * (-len(parts[4]) % 4))
        except ValueError:
            raise InvalidProofOfWork("the proof of work is malformed") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidProofOfWork("the challenge was not issued by this server "
                                     "(or it restarted): fetch a new one")
        now = self.clock_ms()
        if now - issued > self.settings.pow_challenge_ttl_s * 1000 or issued > now + 60_000:
            raise InvalidProofOfWork("the challenge has expired: fetch a new one")
        if mac in self._used or issued <= self._floor_ms:
            raise InvalidProofOfWork("the challenge was used already: fetch a new one")
        if leading_zero_bits(work(challenge, nonce)) < bits:
            raise InvalidProofOfWork("the nonce does not solve the challenge")
        self._remember(mac, issued, now)

    def _remember(self, mac: bytes, issued: int, now: int) -> None:
        ttl_ms = self.settings.pow_challenge_ttl_s * 1000
        used = self._used
        # Expired entries need no memory: their challenges are refused as expired.
        while used:
            oldest = next(iter(used))
            if now - used[oldest] <= ttl_ms:
                break
            used.popitem(last=False)
        used[mac] = issued
        while len(used) > self._max_used:
            _, evicted = used.popitem(last=False)
            self._floor_ms = max(self._floor_ms, evicted)

    def __len__(self) -> int:
        return len(self._used)


__all__ = [
    "Challenge",
    "ProofOfWork",
    "leading_zero_bits",
    "solve",
    "work",
]
