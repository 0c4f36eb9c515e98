"""The SOCKS5 connector against a small RFC 1928 / RFC 1929 server run by the test."""

from __future__ import annotations

import asyncio

import pytest

from veil.mixnet.errors import SocksError
from veil.mixnet.socks import parse_proxy_url, socks5_connect, socks5_connector

from .socks_server import Socks5Server


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _proxy(socks: Socks5Server) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(socks.handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("credentials", [None, (b"alice", b"circuit-7")])
async def test_connect_through_the_proxy(credentials) -> None:
    echo, echo_port = await _echo_server()
    socks = Socks5Server(credentials)
    proxy, proxy_port = await _proxy(socks)
    auth = f"{credentials[0].decode()}:{credentials[1].decode()}@" if credentials else ""
    connect = socks5_connector(f"socks5://{auth}127.0.0.1:{proxy_port}")
    for host in ("localhost", "127.0.0.1"):
        reader, writer = await connect(host, echo_port)
        writer.write(b"through tor")
        assert await reader.readexactly(11) == b"THROUGH TOR"
        writer.close()
    # Names go to the proxy unresolved (no DNS leak); addresses as addresses.
    assert socks.targets == [("localhost", echo_port), ("127.0.0.1", echo_port)]
    proxy.close()
    echo.close()


async def test_refusals_are_socks_errors() -> None:
    proxy, port = await _proxy(Socks5Server((b"u", b"right")))
    with pytest.raises(SocksError, match="username/password"):
        await socks5_connect("127.0.0.1", port, "example.org", 80, auth=("u", "wrong"))
    with pytest.raises(SocksError, match="authentication methods"):
        await socks5_connect("127.0.0.1", port, "example.org", 80)
    proxy.close()
    proxy, port = await _proxy(Socks5Server(refuse=5))
    with pytest.raises(SocksError, match="connection refused"):
        await socks5_connect("127.0.0.1", port, "example.org", 80)
    proxy.close()
    await proxy.wait_closed()
    with pytest.raises(SocksError, match="cannot reach"):
        await socks5_connect("127.0.0.1", port, "example.org", 80)


async def test_a_proxy_that_hangs_up_or_speaks_garbage() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(3)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(SocksError):
        await socks5_connect("127.0.0.1", port, "example.org", 80)
    server.close()


def test_proxy_urls() -> None:
    assert parse_proxy_url("socks5://127.0.0.1:9050") == ("127.0.0.1", 9050, None)
    assert parse_proxy_url("socks5h://u%40x:p@tor:9150") == ("tor", 9150, ("u@x", "p"))
    for bad in ("http://127.0.0.1:8080", "socks5://", "socks5://h:notaport"):
        with pytest.raises(SocksError):
            parse_proxy_url(bad)
