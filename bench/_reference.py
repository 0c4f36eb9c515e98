"""REFERENCE FLOOR for the server benchmarks: NOT a competitor, NOT a messenger server.

A minimal aiohttp server that speaks just enough of the Veil wire protocol for the
unchanged bench load generators (``bench/relay.py``, ``bench/connections.py``) to drive
it, and does the least any relay on this stack must do:

- **no storage, no durability**: an envelope lives only in memory, on its way from the
  sender's socket to the recipient's socket; a ``sent`` reply means "written to the
  recipient's socket", not "stored" (Veil replies after an fsynced commit);
- **no validation** beyond ``json.loads``, **no authentication**: the ``Authorization``
  header of a device socket is only decoded to learn which device it is (the token is
  not checked), access keys are ignored;
- no queue: an envelope for a device that is not connected is answered with an error
  and dropped; acknowledgements are read and discarded; no flow control of its own
  beyond aiohttp's (a slow recipient stalls its senders' sockets).

Its figures are the floor of aiohttp (+ uvloop when Veil uses it) on this machine: what
Veil's storage, durability, validation and flow control cost is the distance to it.

Endpoints (exactly the frames and requests the bench load generators send):

    POST /v1/accounts          → 201 {account_id, device_id: 1, token}   (nothing stored)
    GET  /v1/websocket         device socket; sends one connect-time notice (the same
                               ``keys_low`` frame Veil sends a device without prekeys,
                               which the load generators wait for), then pushes
                               {"type":"envelope","id","ts","envelope"}; reads acks
    GET  /v1/websocket/sealed  {"type":"send","req","to","messages":[{device_id,
                               envelope}]} → forwarded, then {"type":"sent",...}
    GET  /health               {"status": "ok", "connections": n}

    python bench/_reference.py --host 127.0.0.1 --port 8471 [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import itertools
import json
import os
import signal
import time
from typing import Any

from aiohttp import WSMsgType, web

_CONNECT_NOTICE = '{"type":"keys_low","one_time_prekeys":0,"one_time_kem_prekeys":0}'

# (account hex, device id) -> that device's socket. The only state: routing.
sockets: dict[tuple[str, int], web.WebSocketResponse] = {}
connections = 0
_ids = itertools.count(1)


async def register(request: web.Request) -> web.Response:
    json.loads(await request.read())
    account = os.urandom(16).hex()
    token = base64.b64encode(os.urandom(32)).decode()
    return web.json_response({"account_id": account, "device_id": 1, "token": token},
                             status=201)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "connections": connections})


async def _forward(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    """Write each envelope straight to its recipient's socket; then answer the sender."""
    to = frame["to"]
    ts = int(time.time() * 1000)
    stored = []
    for m in frame["messages"]:
        target = sockets.get((to, m["device_id"]))
        if target is None:
            await ws.send_str(json.dumps({"type": "error", "req": frame["req"], "error": {
                "code": "not_connected", "message": "recipient not connected (no queue)"}}))
            return
        id_ = next(_ids)
        await target.send_str(
            f'{{"type":"envelope","id":{id_},"ts":{ts},"envelope":"{m["envelope"]}"}}'
        )
        stored.append({"device_id": m["device_id"], "id": id_, "ts": ts})
    await ws.send_str(json.dumps({"type": "sent", "req": frame["req"], "messages": stored}))


async def _serve(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame["type"] == "send":
            await _forward(ws, frame)
        # "ack": nothing stored, nothing to delete.


def _who(request: web.Request) -> tuple[str, int]:
    """Which device: decoded, not checked ("Basic base64(<account>.<device>:<token>)").
    A function of its own so its temporaries do not live on with an idle connection."""
    user = base64.b64decode(request.headers["Authorization"].split()[1]).decode()
    account, device = user.split(":", 1)[0].split(".")
    return account, int(device)


async def device_socket(request: web.Request) -> web.WebSocketResponse:
    global connections
    key = _who(request)
    ws = web.WebSocketResponse(compress=False, autoping=True)
    await ws.prepare(request)
    sockets[key] = ws
    connections += 1
    try:
        await ws.send_str(_CONNECT_NOTICE)
        await _serve(ws)
    finally:
        connections -= 1
        if sockets.get(key) is ws:
            del sockets[key]
    return ws


async def sealed_socket(request: web.Request) -> web.WebSocketResponse:
    global connections
    ws = web.WebSocketResponse(compress=False, autoping=True)
    await ws.prepare(request)
    connections += 1
    try:
        await _serve(ws)
    finally:
        connections -= 1
    return ws


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/accounts", register)
    app.router.add_get("/v1/websocket", device_socket)
    app.router.add_get("/v1/websocket/sealed", sealed_socket)
    app.router.add_get("/health", health)
    # The same runner and listener settings as veil.server.runner.start.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096, reuse_address=True).start()
    gc.collect()
    gc.freeze()  # as veil.server.runner.serve does after start-up
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio",
                        help="the event loop the Veil server under comparison runs on")
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as r:
        r.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
