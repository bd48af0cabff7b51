"""Per-key limits over one minute: requests per minute and tokens per minute.

A sliding-window counter: counts are kept per fixed minute (aligned to the clock, so that every
instance agrees), and the use "over the last 60 s" is this minute's count plus the previous
minute's weighted by the part of it still inside the window. A cost is admitted when, for every
limit, use + cost <= limit; then it is added to this minute. Refusals add nothing.

With Redis the counters are shared by every instance (one small Lua script checks and adds all
of a request's limits atomically); without Redis, or while it is down, each process counts in
memory (`SharedRedis.call` returns its default at once then), so a request is never failed
because Redis is.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .shared_redis import SharedRedis

__all__ = ["WINDOW", "Check", "Verdict", "MemoryWindows", "Limiter", "retry_after"]

WINDOW = 60.0
_TTL = int(WINDOW * 2) + 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str      # counter name, e.g. "team-a:rpm"
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    retry_after: float = 0.0      # seconds until every refused check would fit again
    refused: str | None = None    # the first refused counter's name
    used: int = 0                 # its use over the window


def _used(cur: int, prev: int, elapsed: float) -> float:
    return prev * (WINDOW - elapsed) / WINDOW + cur


def retry_after(*, limit: int, cost: int, cur: int, prev: int, elapsed: float) -> float:
    """Seconds from now until use + cost <= limit, nothing else being added; inf if never."""
    room = limit - cost
    if room < 0:
        return math.inf
    if _used(cur, prev, elapsed) <= room:
        return 0.0
    if cur <= room:   # the previous minute's share fades out within this minute
        return max(0.0, WINDOW * (1 - (room - cur) / prev) - elapsed)
    # only next minute, as this minute's count becomes the fading previous one
    return (WINDOW - elapsed) + WINDOW * (1 - room / cur)


def _verdict(checks: list[Check], counts: list[tuple[int, int]], elapsed: float) -> Verdict:
    wait, refused, used = 0.0, None, 0
    for check, (cur, prev) in zip(checks, counts):
        if _used(cur, prev, elapsed) + check.cost > check.limit:
            wait = max(wait, retry_after(limit=check.limit, cost=check.cost, cur=cur, prev=prev,
                                         elapsed=elapsed))
            if refused is None:
                refused, used = check.name, int(_used(cur, prev, elapsed))
    return Verdict(refused is None, wait, refused, used)


class MemoryWindows:
    """This process's counters: name -> [minute, count this minute, count the minute before]."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def _get(self, name: str, minute: int) -> list[int]:
        slot = self._counts.get(name)
        if slot is None:
            slot = self._counts[name] = [minute, 0, 0]
        elif slot[0] != minute:
            slot[2] = slot[1] if slot[0] == minute - 1 else 0
            slot[1] = 0
            slot[0] = minute
        return slot

    def hit(self, checks: list[Check], now: float) -> Verdict:
        minute = int(now // WINDOW)
        slots = [self._get(c.name, minute) for c in checks]
        verdict = _verdict(checks, [(s[1], s[2]) for s in slots], now - minute * WINDOW)
        if verdict.ok:
            for slot, check in zip(slots, checks):
                slot[1] += check.cost
        self._prune(minute)
        return verdict

    def add(self, name: str, amount: int, now: float) -> None:
        slot = self._get(name, int(now // WINDOW))
        slot[1] = max(0, slot[1] + amount)

    def _prune(self, minute: int) -> None:
        if len(self._counts) > 10_000:   # counters of keys idle for two minutes say nothing
            for name in [n for n, s in self._counts.items() if s[0] < minute - 1]:
                del self._counts[name]


# KEYS: this minute's and the previous minute's counter of each check, in pairs.
# ARGV: elapsed seconds in this minute, window, ttl, then limit and cost of each check.
_HIT = """
local elapsed, window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local counts, ok = {}, 1
for i = 1, #KEYS / 2 do
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  counts[2 * i - 1], counts[2 * i] = cur, prev
  local limit, cost = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if prev * (window - elapsed) / window + cur + cost > limit then ok = 0 end
end
if ok == 1 then
  for i = 1, #KEYS / 2 do
    redis.call('INCRBY', KEYS[2 * i - 1], ARGV[3 + 2 * i])
    redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  end
end
table.insert(counts, 1, ok)
return counts
"""


class Limiter:
    """Checks and counts in Redis when there is one and it answers, else in memory."""

    def __init__(self, redis: Callable[[], SharedRedis | None]) -> None:
        self._redis = redis
        self.memory = MemoryWindows()
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def backend(self) -> str:
        return "redis" if self._redis() is not None else "memory"

    def _keys(self, redis: SharedRedis, name: str, minute: int) -> tuple[str, str]:
        # one hash tag per counter, so that a cluster keeps a counter's two minutes together
        return (redis.key("rl", "{" + name + "}", str(minute)),
                redis.key("rl", "{" + name + "}", str(minute - 1)))

    @staticmethod
    def clock() -> float:
        return time.time()   # wall time: every instance must agree on the minute

    async def hit(self, checks: list[Check]) -> Verdict:
        now = self.clock()
        redis = self._redis()
        if redis is None or not checks:
            return self.memory.hit(checks, now)
        minute = int(now // WINDOW)
        elapsed = now - minute * WINDOW
        keys = [k for c in checks for k in self._keys(redis, c.name, minute)]
        args: list[Any] = [f"{elapsed:.3f}", str(WINDOW), str(_TTL)]
        for check in checks:
            args += [str(check.limit), str(check.cost)]
        reply = await redis.call(lambda r: r.eval(_HIT, len(keys), *keys, *args), None)
        if not isinstance(reply, list) or len(reply) != 1 + 2 * len(checks):
            return self.memory.hit(checks, now)   # Redis is down: count here meanwhile
        counts = [(int(reply[1 + 2 * i]), int(reply[2 + 2 * i])) for i in range(len(checks))]
        if int(reply[0]) == 1:
            return Verdict(True)
        verdict = _verdict(checks, counts, elapsed)
        # a race with another instance may leave nothing refused in the counts we saw
        return verdict if not verdict.ok else Verdict(False, 1.0, checks[0].name)

    def add(self, name: str, amount: int) -> None:
        """Add to this minute's count (tokens known once the answer is over); never waits."""
        if amount == 0:
            return
        now = self.clock()
        redis = self._redis()
        if redis is None:
            self.memory.add(name, amount, now)
            return
        key = self._keys(redis, name, int(now // WINDOW))[0]

        async def incr(r: Any) -> Any:
            async with r.pipeline(transaction=False) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, _TTL)
                return await pipe.execute()

        async def send() -> None:
            if await redis.call(incr, None) is None:
                self.memory.add(name, amount, now)

        task = asyncio.get_running_loop().create_task(send())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
