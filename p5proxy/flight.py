"""One upstream answer shared by every client that asked the same question at the same time.

A `Flight` runs its producer (the upstream call, or a relay of another instance's call) in its
own task and keeps every batch it produced. Each client reads the flight with its own cursor:
first what was produced before it joined, then the rest as it arrives. The producer does not
belong to any one client: a client that leaves only stops its own reading, and the producer is
cancelled when the last reader leaves before the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from .canonical import HEARTBEAT, Heartbeat, StreamEvent
from .errors import UpstreamError

__all__ = ["Flight"]

Batch = list[StreamEvent]
_HEARTBEAT_BATCH: Batch = [HEARTBEAT]


class Flight:
    __slots__ = ("key", "log", "done", "error", "readers", "task", "_waiters",
                 "heartbeat_secs", "route", "on_end", "streaming")

    def __init__(self, key: str, *, heartbeat_secs: float) -> None:
        self.key = key
        self.log: list[Batch] = []
        self.done = False
        self.error: BaseException | None = None
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[bool]] = []   # readers waiting for news
        self.heartbeat_secs = heartbeat_secs
        self.route: Any = None               # the route that answered (set by the producer)
        self.on_end: list[Callable[[Flight], None]] = []
        self.streaming = False               # the upstream answered and streams (keep-alives seen)

    def start(self, producer: AsyncIterator[Batch]) -> None:
        self.task = asyncio.get_running_loop().create_task(self._pump(producer))

    async def _pump(self, producer: AsyncIterator[Batch]) -> None:
        try:
            async for batch in producer:
                # keep-alives are per reader (see read): a late joiner must not replay them
                if batch and not (len(batch) == 1 and isinstance(batch[0], Heartbeat)):
                    self.log.append(batch)
                    self._notify()
                elif not self.streaming:   # answered, silent before its first event (thinking)
                    self.streaming = True
                    self._notify()
        except asyncio.CancelledError:
            self.error = UpstreamError("the upstream request was cancelled", status=503,
                                       kind="overloaded_error")
        except BaseException as exc:   # delivered to every reader, in its own protocol
            self.error = exc
        finally:
            aclose = getattr(producer, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()
            self._end()

    def abandon(self, exc: BaseException) -> None:
        """End a flight that never started; its readers get an error, not a hang."""
        if not isinstance(exc, Exception):   # cancelled: the one who would have asked left
            exc = UpstreamError("the request this one joined was cancelled", status=503,
                                kind="overloaded_error")
        self.error = exc
        self._end()

    def _end(self) -> None:
        self.done = True
        self._notify()
        for callback in self.on_end:
            callback(self)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for news in waiters:
            if not news.done():   # (a reader cancelled meanwhile)
                news.set_result(True)

    async def _news(self, timeout: float | None) -> bool:
        """Until the next batch or the end (True), or `timeout` seconds without either (False).
        A bare future and a timer per wait: this runs for every batch of every reader, where
        an asyncio.Event per batch and asyncio.timeout per wait cost 10-16 us a batch."""
        loop = asyncio.get_running_loop()
        news: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(news)
        timer = loop.call_later(timeout, _silence, news) if timeout is not None else None
        try:
            return await news
        finally:
            if timer is not None:
                timer.cancel()
            if news in self._waiters:   # timed out or cancelled, and not notified since
                self._waiters.remove(news)

    async def wait(self, seen: int, timeout: float) -> None:
        """Until the log holds more than `seen` batches or the flight is done (at most
        `timeout`). For observers such as a relay, which do not count as readers."""
        if len(self.log) > seen or self.done:
            return
        await self._news(timeout)

    @property
    def succeeded(self) -> bool:
        return self.done and self.error is None

    async def read(self) -> AsyncGenerator[Batch, None]:
        """Every batch from the start; the producer's exception is raised where it happened.
        While the producer is silent after its first batch, or after the upstream answered but
        before its first event (a model thinking), the reader gets keep-alives."""
        self.readers += 1
        i = 0
        try:
            while True:
                if i < len(self.log):
                    i += 1
                    yield self.log[i - 1]
                    continue
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                if not self.log and not self.streaming:
                    await self._news(None)
                elif not await self._news(self.heartbeat_secs):
                    yield _HEARTBEAT_BATCH
        finally:
            self.readers -= 1
            if self.readers == 0 and not self.done and self.task is not None:
                self.task.cancel()   # nobody is left to read the answer: stop paying for it


def _silence(news: asyncio.Future[bool]) -> None:
    if not news.done():
        news.set_result(False)
