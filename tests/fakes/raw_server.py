"""A loopback TCP server for fakes that speak raw bytes (fault injection, a forward proxy).

Subclasses implement `handle(reader, writer)`; connection tasks and writers are tracked so that
`stop()` ends every open connection and waits for its handler.
"""

from __future__ import annotations

import asyncio

__all__ = ["RawServer"]


class RawServer:
    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):   # open connections end; handlers return
                writer.transport.abort()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
