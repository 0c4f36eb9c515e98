"""Registration proof of work, the client's side (issue 13 §2).

A server in registration mode ``pow`` answers a registration without a solution with
``proof_of_work_required``; the client then fetches a challenge
(``GET /v1/accounts/challenge``), finds a nonce such that SHA-256(challenge ":" nonce)
starts with the challenge's zero bits — about 2**bits hashes, some tens of
milliseconds at the default 14 bits — in a worker thread, and registers again with the
solution. A challenge that expired or was refused meanwhile is fetched and solved once
more. Servers in other modes never ask, and nothing changes for them.
"""

from __future__ import annotations

import asyncio

import msgspec

from veil.client.api import Api
from veil.client.errors import ServerRejected
from veil.core.proof_of_work import MAX_BITS, solve
from veil.protocol import requests as rq
from veil.protocol import responses as rs

CHALLENGE_PATH = "/v1/accounts/challenge"
_ASKED = ("proof_of_work_required", "invalid_proof_of_work")


async def solved(api: Api) -> rq.ProofOfWork:
    """A fresh challenge of the server, solved (off the event loop)."""
    got = await api.call("GET", CHALLENGE_PATH, rs.PowChallenge, auth=False)
    if got.bits > MAX_BITS:
        raise ServerRejected(502, "bad_response", "the server asks for too much work")
    nonce = await asyncio.to_thread(solve, got.challenge, got.bits)
    return rq.ProofOfWork(challenge=got.challenge, nonce=nonce)


async def register(api: Api, body: rq.Registration) -> rs.Registered:
    """``POST /v1/accounts``, solving the server's challenge when it asks for one."""
    for attempt in range(3):
        try:
            return await api.call("POST", "/v1/accounts", rs.Registered, body, auth=False)
        except ServerRejected as exc:
            if exc.server_code not in _ASKED or attempt == 2:
                raise
        body = msgspec.structs.replace(body, proof_of_work=await solved(api))
    raise AssertionError("unreachable")


__all__ = [
    "register",
    "solve",
    "solved",
]
