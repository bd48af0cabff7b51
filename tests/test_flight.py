"""The shared answer of in-flight de-duplication (p5proxy/flight.py), driven directly: the
races between a reader's keep-alive timer and the producer's next batch are not reachable
deterministically over sockets (tests/test_cache.py covers the whole path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from p5proxy import flight as flight_module
from p5proxy.canonical import HEARTBEAT, StreamEvent, TextDelta
from p5proxy.flight import Flight

Batch = list[StreamEvent]


async def _fed(queue: asyncio.Queue[Batch | None]) -> AsyncGenerator[Batch, None]:
    while (batch := await queue.get()) is not None:
        yield batch


def _fed_flight(heartbeat_secs: float) -> tuple[asyncio.Queue[Batch | None], Flight]:
    """A started flight whose producer yields what is put in the queue (None ends it)."""
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    f = Flight("k", heartbeat_secs=heartbeat_secs)
    f.start(_fed(queue))
    return queue, f


async def _read_all(f: Flight) -> list[Batch]:
    return [batch async for batch in f.read()]


async def test_readers_get_every_batch_and_keepalives_during_pauses() -> None:
    queue, f = _fed_flight(0.05)
    first = asyncio.create_task(_read_all(f))
    await queue.put([TextDelta(0, "a")])
    await asyncio.sleep(0.01)
    late = asyncio.create_task(_read_all(f))   # joins after the first batch
    await asyncio.sleep(0.2)                   # silence: keep-alives, per reader
    await queue.put([TextDelta(0, "b")])
    await queue.put(None)
    for batches in (await first, await late):
        texts = [b[0].text for b in batches if isinstance(b[0], TextDelta)]
        assert texts == ["a", "b"]
        assert sum(b == [HEARTBEAT] for b in batches) >= 2
    assert f.succeeded and f.log == [[TextDelta(0, "a")], [TextDelta(0, "b")]]


async def test_a_batch_right_after_the_keepalive_timer_fired() -> None:
    """The timer and the batch both land before the reader resumes: it gets a keep-alive
    now and the batch next, and leaves nothing behind."""
    f = Flight("k", heartbeat_secs=10)
    waiting = asyncio.create_task(f._news(10))
    await asyncio.sleep(0)
    (news,) = f._waiters
    flight_module._silence(news)   # the keep-alive timer fired,
    f._notify()                    # and a batch came before the reader ran again
    assert await waiting is False
    assert f._waiters == []


async def test_the_last_reader_leaving_cancels_the_producer() -> None:
    queue, f = _fed_flight(10)
    reader = asyncio.create_task(_read_all(f))
    await queue.put([TextDelta(0, "a")])
    await asyncio.sleep(0.01)
    reader.cancel()
    await asyncio.sleep(0.01)
    assert f.done and f.error is not None and f.task is not None and f.task.done()
    assert f._waiters == []
