"""Deadlines for the awaits on the hot path: asyncio.timeout()'s behaviour at a fraction of its
cost.

asyncio.timeout() arms a timer on the event loop for every await it guards (with uvloop a libuv
timer, started, stopped and closed again) and looks the running loop up three times (each a
getpid() system call on Python 3.11). Each request guards two or three awaits on its upstream,
and nearly all of them finish long before their deadline: measured on a one-core gateway, that
was about a tenth of its time. Here all the deadlines of one event loop share a single timer:

    deadlines = Deadlines(loop)
    async with deadlines.after(30.0) as scope:   # TimeoutError when 30 s pass first
        data = await reader.read()
    scope.expired()                              # as asyncio.Timeout.expired()

A deadline is an entry in the bucket of its TICK-long slice of time; the timer is armed for the
earliest bucket only, and cancels the tasks of every bucket that is due when it fires. Entering
and leaving a scope is a set insert and a set removal. Deadlines fire up to TICK late, which is
nothing next to timeouts of seconds. Cancellation follows asyncio.timeout() exactly: the task
is cancelled, and the CancelledError becomes TimeoutError on leaving the block unless someone
else cancelled the task too.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from types import TracebackType

__all__ = ["Deadlines", "Scope", "TICK"]

TICK = 0.05   # seconds: the resolution of all deadlines


class Scope:
    """One guarded block (from `Deadlines.after`)."""
    __slots__ = ("_owner", "when", "_bucket", "_task", "_cancelling", "_expired")

    def __init__(self, owner: Deadlines, when: float | None) -> None:
        self._owner = owner
        self.when = when
        self._bucket = 0
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._expired = False

    def expired(self) -> bool:
        """Whether the deadline passed and cancelled the block."""
        return self._expired

    async def __aenter__(self) -> Scope:
        task = asyncio.current_task(self._owner.loop)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self.when is not None:
            self._owner._add(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._expired:
            self._owner._remove(self)
            return None
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc   # our cancellation, nobody else's
        return None

    def _expire(self) -> None:
        self._expired = True
        assert self._task is not None
        self._task.cancel()


class Deadlines:
    """The deadlines of one event loop, on one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, set[Scope]] = {}
        self._order: list[int] = []   # heap of bucket numbers (some may be gone already)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def after(self, delay: float | None) -> Scope:
        """A scope whose deadline is `delay` seconds from now (None: no deadline)."""
        return Scope(self, None if delay is None else self.loop.time() + delay)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def _add(self, scope: Scope) -> None:
        assert scope.when is not None
        number = math.ceil(scope.when / TICK)
        scope._bucket = number
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = set()
            heapq.heappush(self._order, number)
            if self._armed_for is None or number < self._armed_for:
                self._arm(number)
        bucket.add(scope)

    def _remove(self, scope: Scope) -> None:
        bucket = self._buckets.get(scope._bucket)
        if bucket is not None:
            bucket.discard(scope)
            if not bucket:   # the timer may still fire for it and find nothing
                del self._buckets[scope._bucket]

    def _arm(self, number: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = number
        self._timer = self.loop.call_at(number * TICK, self._fire)

    def _fire(self) -> None:
        self._timer = self._armed_for = None
        now = self.loop.time()
        order = self._order
        while order and order[0] * TICK <= now:
            bucket = self._buckets.pop(heapq.heappop(order), None)
            if bucket:
                for scope in bucket:
                    scope._expire()
        while order and order[0] not in self._buckets:   # buckets emptied before they were due
            heapq.heappop(order)
        if order:
            self._arm(order[0])
