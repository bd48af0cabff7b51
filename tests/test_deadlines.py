"""p5proxy/deadlines.py: asyncio.timeout()'s behaviour, with every deadline on one timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from p5proxy.deadlines import TICK, Deadlines


async def test_a_passed_deadline_raises_timeout_error_near_its_time() -> None:
    d = Deadlines(asyncio.get_running_loop())
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        async with d.after(0.2) as scope:
            await asyncio.sleep(5)
    took = time.monotonic() - t0
    assert scope.expired()
    assert 0.2 <= took < 0.2 + TICK + 1.0   # (generous: a busy CI machine)
    assert len(d) == 0 and asyncio.current_task().cancelling() == 0   # type: ignore[union-attr]


async def test_a_block_that_finishes_in_time_leaves_nothing_behind() -> None:
    d = Deadlines(asyncio.get_running_loop())
    for _ in range(100):
        async with d.after(0.1) as scope:
            await asyncio.sleep(0)
        assert not scope.expired()
    assert len(d) == 0
    await asyncio.sleep(0.1 + 2 * TICK)   # the timer fires, finds nothing, cancels nothing
    await asyncio.sleep(0)


async def test_none_means_no_deadline() -> None:
    d = Deadlines(asyncio.get_running_loop())
    async with d.after(None) as scope:
        await asyncio.sleep(TICK * 2)
    assert not scope.expired() and len(d) == 0


async def test_many_deadlines_expire_each_in_its_own_task() -> None:
    d = Deadlines(asyncio.get_running_loop())

    async def guarded(delay: float, sleep: float) -> str:
        try:
            async with d.after(delay):
                await asyncio.sleep(sleep)
            return "done"
        except TimeoutError:
            return "timeout"

    delays = [0.05, 0.3, 0.1, 0.5, 0.2, 0.15]
    results = await asyncio.gather(*(guarded(x, 0.25) for x in delays),
                                   *(guarded(x, 0.01) for x in delays))
    assert results[:6] == ["timeout" if x < 0.25 else "done" for x in delays]
    assert results[6:] == ["done"] * 6
    assert len(d) == 0


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    d = Deadlines(asyncio.get_running_loop())

    async def work() -> None:
        async with d.after(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(d) == 0


async def test_nested_deadlines_the_inner_one_expires_first() -> None:
    d = Deadlines(asyncio.get_running_loop())
    with pytest.raises(TimeoutError):
        async with d.after(5) as outer:
            async with d.after(0.1) as inner:
                await asyncio.sleep(1)
    assert inner.expired() and not outer.expired()
    assert len(d) == 0


async def test_an_earlier_deadline_rearms_the_timer() -> None:
    d = Deadlines(asyncio.get_running_loop())
    t0 = time.monotonic()

    async def long() -> None:
        async with d.after(30):
            await asyncio.sleep(1)

    task = asyncio.create_task(long())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with d.after(0.1):
            await asyncio.sleep(5)
    assert time.monotonic() - t0 < 0.1 + TICK + 1.0   # not the 30 s one
    await task   # its own deadline is far away: it finishes normally
