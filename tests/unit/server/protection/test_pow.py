"""Registration proof of work (issue 13 §2): solve and verify, expiry, replay, the
bounded memory of used challenges, and difficulty rising with registration pressure."""

from __future__ import annotations

import time

import pytest

from veil.client.proof_of_work import solve as client_solve
from veil.server.errors import InvalidProofOfWork
from veil.server.protection.pow import ProofOfWork, leading_zero_bits, solve, work
from veil.server.protection.settings import LimitSettings


class Clocks:
    def __init__(self) -> None:
        self.s = 100.0
        self.ms = 1_700_000_000_000

    def mono(self) -> float:
        return self.s

    def wall(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.s += seconds
        self.ms += int(seconds * 1000)


def _pow(clocks: Clocks, **settings: int) -> ProofOfWork:
    values = {"pow_min_bits": 8, "pow_max_bits": 16, "pow_challenge_ttl_s": 300, **settings}
    return ProofOfWork(LimitSettings(**values), clocks.mono, clocks.wall)


def test_a_solved_challenge_verifies_once() -> None:
    clocks = Clocks()
    pow_ = _pow(clocks)
    challenge = pow_.challenge()
    assert challenge.bits == 8
    nonce = solve(challenge.text, challenge.bits)
    assert leading_zero_bits(work(challenge.text, nonce)) >= 8
    pow_.verify(challenge.text, nonce)
    with pytest.raises(InvalidProofOfWork, match="used already"):
        pow_.verify(challenge.text, nonce)


def test_client_and_server_agree() -> None:
    clocks = Clocks()
    pow_ = _pow(clocks)
    challenge = pow_.challenge()
    pow_.verify(challenge.text, client_solve(challenge.text, challenge.bits))


def test_wrong_nonce_forged_and_expired_challenges_are_refused() -> None:
    clocks = Clocks()
    pow_ = _pow(clocks, pow_min_bits=12)
    challenge = pow_.challenge()
    nonce = solve(challenge.text, challenge.bits)
    bad = next(str(n) for n in range(10_000)
               if leading_zero_bits(work(challenge.text, str(n))) < 12)
    with pytest.raises(InvalidProofOfWork, match="does not solve"):
        pow_.verify(challenge.text, bad)
    # Lowering the difficulty in the text breaks the MAC.
    parts = challenge.text.split(".")
    parts[2] = "1"
    with pytest.raises(InvalidProofOfWork, match="not issued"):
        pow_.verify(".".join(parts), nonce)
    # Another process's secret: not ours.
    other = _pow(clocks, pow_min_bits=12)
    with pytest.raises(InvalidProofOfWork, match="not issued"):
        other.verify(challenge.text, nonce)
    clocks.advance(301)
    with pytest.raises(InvalidProofOfWork, match="expired"):
        pow_.verify(challenge.text, nonce)
    for text in ("", "v1", "v2.1.1.a.b", "v1.x.1.a.b"):
        with pytest.raises(InvalidProofOfWork):
            pow_.verify(text, "1")


def test_used_challenges_are_bounded_and_evicted_ones_stay_refused() -> None:
    clocks = Clocks()
    pow_ = ProofOfWork(LimitSettings(pow_min_bits=1, pow_max_bits=1), clocks.mono,
                       clocks.wall, max_used=10)
    solved = []
    for _ in range(30):
        challenge = pow_.challenge()
        nonce = solve(challenge.text, challenge.bits)
        pow_.verify(challenge.text, nonce)
        solved.append((challenge.text, nonce))
        clocks.advance(0.01)
    assert len(pow_) <= 10
    for text, nonce in solved:  # none of them, remembered or evicted, registers again
        with pytest.raises(InvalidProofOfWork):
            pow_.verify(text, nonce)
    fresh = pow_.challenge()
    pow_.verify(fresh.text, solve(fresh.text, fresh.bits))


def test_expired_entries_leave_the_memory() -> None:
    clocks = Clocks()
    pow_ = _pow(clocks, pow_min_bits=1, pow_max_bits=1)
    for _ in range(5):
        c = pow_.challenge()
        pow_.verify(c.text, solve(c.text, c.bits))
    clocks.advance(400)
    c = pow_.challenge()
    pow_.verify(c.text, solve(c.text, c.bits))
    assert len(pow_) == 1


def test_difficulty_rises_with_registrations_and_falls_back() -> None:
    clocks = Clocks()
    pow_ = _pow(clocks, pow_min_bits=10, pow_max_bits=14)
    assert pow_.bits() == 10
    for _ in range(10):
        pow_.record_registration()
    assert pow_.bits() == 10  # ten a minute is rest
    for _ in range(30):
        pow_.record_registration()
    assert pow_.bits() == 12  # about 40 a minute: two doublings
    for _ in range(10_000):
        pow_.record_registration()
    assert pow_.bits() == 14  # capped at pow_max_bits
    clocks.advance(3600)
    assert pow_.bits() == 10


def test_default_difficulty_is_solved_well_under_a_second() -> None:
    clocks = Clocks()
    pow_ = ProofOfWork(LimitSettings(), clocks.mono, clocks.wall)
    times = []
    for _ in range(10):
        c = pow_.challenge()
        started = time.perf_counter()
        nonce = client_solve(c.text, c.bits)
        times.append(time.perf_counter() - started)
        pow_.verify(c.text, nonce)
    times.sort()
    # Median, not max: one unlucky challenge may need several times 2**14 hashes.
    assert times[len(times) // 2] < 0.5, times
