"""A TCP proxy on loopback that forwards to a server and can cut every connection after
a number of bytes: a dropped connection, made by real sockets (for transfer tests)."""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0                      # connections cut so far
        self._budget: int | None = None    # bytes (either way) before the next cut
        self.rate: float | None = None     # bytes per second per direction, if paced
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, nbytes: int) -> None:
        """Cut every open connection once ``nbytes`` more bytes went through."""
        self._budget = nbytes

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    def _spend(self, n: int) -> bool:
        if self._budget is None:
            return False
        self._budget -= n
        if self._budget > 0:
            return False
        self._budget = None
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    if self._spend(len(data)):
                        return
                    await dst.drain()
                    if self.rate:              # a slow line, so a test can act mid-way
                        await asyncio.sleep(len(data) / self.rate)
            dst.transport.abort() if dst.transport is not None else None

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
