"""A small SOCKS5 server (RFC 1928 / RFC 1929) the tests run on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import struct


class Socks5Server:
    """Just enough SOCKS5: no-auth or username/password, CONNECT, then a byte pipe.

    With ``half_close``, an end of stream from one side is passed on as an end of stream
    (a half close) and the pipe lasts until both sides have closed, as a real proxy does;
    then a connection that :meth:`wait_idle` no longer counts has been closed by its
    target too, that is, the target has read everything sent through it."""

    def __init__(self, credentials: tuple[bytes, bytes] | None = None, refuse: int = 0,
                 half_close: bool = False) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self.half_close = half_close
        self.targets: list[tuple[str, int]] = []
        self.active = 0

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is being served (at most ``timeout`` s); whether so."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.active and loop.time() < end:
            await asyncio.sleep(0.005)
        return not self.active

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        try:
            await self._handle(reader, writer)
        finally:
            self.active -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            version, count = await reader.readexactly(2)
            methods = await reader.readexactly(count)
            wanted = 2 if self.credentials else 0
            if version != 5 or wanted not in methods:
                writer.write(b"\x05\xff")
                return
            writer.write(bytes([5, wanted]))
            if self.credentials:
                _, ulen = await reader.readexactly(2)
                user = await reader.readexactly(ulen)
                (plen,) = await reader.readexactly(1)
                password = await reader.readexactly(plen)
                ok = (user, password) == self.credentials
                writer.write(b"\x01" + (b"\x00" if ok else b"\x01"))
                if not ok:
                    return
            _, command, _, atyp = await reader.readexactly(4)
            if atyp == 3:
                (length,) = await reader.readexactly(1)
                host = (await reader.readexactly(length)).decode()
            else:
                host = ".".join(str(b) for b in await reader.readexactly(4))
            (port,) = struct.unpack(">H", await reader.readexactly(2))
            self.targets.append((host, port))
            if self.refuse or command != 1:
                writer.write(bytes([5, self.refuse or 7, 0, 1, 0, 0, 0, 0, 0, 0]))
                return
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1" if host == "localhost" else host, port)
            writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(4096):
                    dst.write(data)
                    await dst.drain()
                dst.close()

            async def half_pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter
                                ) -> None:
                with contextlib.suppress(OSError, ConnectionError):
                    while data := await src.read(4096):
                        dst.write(data)
                        await dst.drain()
                # A reset ends this direction like an end of stream would.
                with contextlib.suppress(OSError, ConnectionError):
                    dst.write_eof()

            if self.half_close:
                try:
                    await asyncio.gather(half_pipe(reader, up_writer),
                                         half_pipe(up_reader, writer))
                finally:
                    up_writer.close()
            else:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
