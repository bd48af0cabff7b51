"""Bundled response cache: an in-memory LRU, and Redis as a second tier shared by instances.

With Redis, instances also share in-flight de-duplication: the first to ask holds a lease
(`lease:<key>`, renewed while it streams) and appends every batch of its answer to a Redis
stream (`events:<key>`); instances asking the same meanwhile read that stream from the start
and then live. A leader that stops without a word lets its lease expire: a follower that has
sent nothing yet asks upstream itself, one that has gets a clean error. An instance never
follows its own answer through Redis (see follow).

Redis trouble never fails a request: SharedRedis gives up quickly, and this falls back to
memory and to uncoordinated upstream calls until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from p5proxy import hookimpl
from p5proxy.aggregate import FinalMessage
from p5proxy.config import CacheConfig, Config
from p5proxy.errors import UpstreamError
from p5proxy.eventcodec import (decode_error, decode_event, decode_final, encode_error,
                                encode_event, encode_final)
from p5proxy.flight import Flight
from p5proxy.response_cache import Batch, LeaderLost, ResponseCache
from p5proxy.shared_redis import SharedRedis

log = logging.getLogger("p5proxy.cache")

_FAILED = object()          # Redis did not answer (distinct from an empty answer)
_READ_BLOCK_MS = 400        # one blocking stream read; below SharedRedis's socket timeout
_RELAY_KEEP_SECS = 60       # how long a finished answer's event stream stays readable
# renew the lease only while we still hold it
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
           "return redis.call('del', KEYS[1]) else return 0 end"
# take the lease when it is free (nil), else say who holds it
_TAKE = "local holder = redis.call('get', KEYS[1]) if holder then return holder end " \
        "redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return false"


class MemoryTier:
    """LRU of serialised final messages with per-entry expiry."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> bytes | None:
        item = self.entries.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return item[1]

    def put(self, key: str, data: bytes, ttl: float) -> None:
        if self.max_entries <= 0 or ttl <= 0:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (time.monotonic() + ttl, data)
        self.bytes += len(data)
        while len(self.entries) > self.max_entries:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        _, data = self.entries.pop(key)
        self.bytes -= len(data)


class TieredCache(ResponseCache):
    def __init__(self, settings: CacheConfig, redis: SharedRedis | None, *,
                 owns_redis: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.memory = MemoryTier(settings.memory_entries)
        self.redis = redis
        self.owns_redis = owns_redis   # its own connection (cache.redis_url): closed here
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relaying: set[str] = set()   # keys whose answer this instance is relaying out

    # --- entries ------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[FinalMessage, str] | None:
        data = self.memory.get(key)
        if data is not None:
            return decode_final(orjson.loads(data)), "memory"
        if self.redis is None:
            return None
        entry = self.redis.key("entry", key)
        async def read(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.get(entry)
            pipe.pttl(entry)
            return await pipe.execute()
        found = await self.redis.call(read, None)
        if not found or found[0] is None:
            return None
        data, pttl = found
        if pttl and pttl > 0:
            self.memory.put(key, data, pttl / 1000)
        return decode_final(orjson.loads(data)), "redis"

    def put(self, key: str, final: FinalMessage, ttl: float) -> None:
        # a copy of exactly its size: orjson's output keeps the (larger) buffer it was written
        # into, and entries live long
        data = bytes(memoryview(orjson.dumps(encode_final(final))))
        limit = self.settings.max_entry_bytes
        if limit and len(data) > limit:
            self.stats.oversize_skips += 1
            log.info("answer of %d bytes not cached (cache.max_entry_bytes is %d)",
                     len(data), limit)
            return
        self.stats.stores += 1
        self.memory.put(key, data, ttl)
        if self.redis is not None and ttl > 0:
            entry, ms = self.redis.key("entry", key), int(ttl * 1000)
            self._spawn(self.redis.call(lambda r: r.set(entry, data, px=ms), None))

    # --- in-flight de-duplication across instances ----------------------------------------

    async def follow(self, key: str) -> AsyncIterator[Batch] | None:
        if self.redis is None or not self.redis.up:
            return None
        lease, ms = self.redis.key("lease", key), int(self.settings.lease_secs * 1000)
        holder = await self.redis.call(lambda r: r.eval(_TAKE, 1, lease, self.instance, ms),
                                       _FAILED)
        if holder is _FAILED or holder is None:   # Redis failed: uncoordinated; None: we lead
            return None
        if holder == self.instance.encode():
            # This instance's own answer, ended here a moment ago (the request missed it in
            # memory while it asked Redis) while its relay still runs: ask upstream from here
            # rather than read it back through Redis, which may fail in between. lead() leaves
            # that relay alone.
            return None
        return self._relay_in(key)

    def lead(self, key: str, flight: Flight) -> None:
        if self.redis is not None and key not in self._relaying:
            self._relaying.add(key)
            self._spawn(self._relay_out(self.redis, key, flight))

    async def _relay_out(self, redis: SharedRedis, key: str, flight: Flight) -> None:
        try:
            await self._relay_batches(redis, key, flight)
        finally:
            self._relaying.discard(key)

    async def _relay_batches(self, redis: SharedRedis, key: str, flight: Flight) -> None:
        """Append the flight's batches to the event stream, renew the lease, then close."""
        stream, lease = redis.key("events", key), redis.key("lease", key)
        lease_ms = int(self.settings.lease_secs * 1000)
        sent, renewed = 0, time.monotonic()
        await redis.call(lambda r: r.delete(stream), None)   # leftovers of an earlier answer
        while True:
            await flight.wait(sent, self.settings.lease_secs / 3)
            fresh = flight.log[sent:]
            if fresh:
                sent += len(fresh)
                payloads = [orjson.dumps([encode_event(ev) for ev in b]) for b in fresh]

                async def append(r: Any, payloads: list[bytes] = payloads) -> Any:
                    pipe = r.pipeline(transaction=False)
                    for p in payloads:
                        pipe.xadd(stream, {"b": p})
                    return await pipe.execute()
                await redis.call(append, None, timeout=1.0)
            if time.monotonic() - renewed > self.settings.lease_secs / 3:
                renewed = time.monotonic()
                await redis.call(lambda r: r.eval(_RENEW, 1, lease, self.instance, lease_ms),
                                 None)
            if flight.done and sent >= len(flight.log):
                break
        end: list[Any]
        if flight.error is None:
            end = ["ok"]
        elif sent == 0 and isinstance(flight.error, UpstreamError) \
                and "cancelled" in flight.error.message:
            end = ["gone"]   # its clients left first: followers should ask for themselves
        else:
            end = ["error", encode_error(flight.error)]

        async def finish(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.xadd(stream, {"end": orjson.dumps(end)})
            pipe.expire(stream, _RELAY_KEEP_SECS)
            pipe.eval(_RELEASE, 1, lease, self.instance)
            return await pipe.execute()
        await redis.call(finish, None, timeout=1.0)

    async def _relay_in(self, key: str) -> AsyncGenerator[Batch, None]:
        redis = self.redis
        assert redis is not None
        stream, lease = redis.key("events", key), redis.key("lease", key)
        last, delivered, quiet_since = "0-0", False, time.monotonic()
        while True:
            answer: Any = await redis.call(
                lambda r: r.xread({stream: last}, count=256, block=_READ_BLOCK_MS), _FAILED,
                timeout=_READ_BLOCK_MS / 1000 + 0.5)
            if answer is _FAILED:
                if not delivered:
                    raise LeaderLost()
                raise UpstreamError("lost the connection to the shared answer (Redis failed)")
            if not answer:
                if time.monotonic() - quiet_since > 1.0:
                    alive = await redis.call(lambda r: r.exists(lease), _FAILED)
                    if alive == 0 or alive is _FAILED:
                        if not delivered:
                            raise LeaderLost()
                        raise UpstreamError("the gateway instance answering this request "
                                            "stopped before it finished")
                    quiet_since = time.monotonic()
                continue
            quiet_since = time.monotonic()
            for entry_id, fields in answer[0][1]:
                last = entry_id
                if b"end" in fields:
                    end = orjson.loads(fields[b"end"])
                    if end[0] == "ok":
                        return
                    if end[0] == "gone" and not delivered:
                        raise LeaderLost()
                    raise decode_error(end[1]) if end[0] == "error" else UpstreamError(
                        "the gateway instance answering this request stopped")
                delivered = True
                yield [decode_event(v) for v in orjson.loads(fields[b"b"])]

    # --- housekeeping -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def describe(self) -> dict[str, Any]:
        s = self.stats
        return {
            "enabled": True, "entries": len(self.memory.entries), "bytes": self.memory.bytes,
            "max_entries": self.memory.max_entries, "hits": s.hits, "misses": s.misses,
            "bypasses": s.bypasses, "stores": s.stores, "oversize_skips": s.oversize_skips,
            "inflight_joins": s.inflight_joins, "remote_joins": s.remote_joins,
            "takeovers": s.takeovers,
            "redis": self.redis.describe() if self.redis is not None else None,
        }

    async def close(self) -> None:
        if self._tasks:   # let stores and relays finish briefly; they never wait long
            await asyncio.wait(set(self._tasks), timeout=2)
        for task in self._tasks:
            task.cancel()
        if self.redis is not None and self.owns_redis:
            await self.redis.close()


@hookimpl(trylast=True)
def p5proxy_response_cache(config: Config, redis: SharedRedis | None) -> ResponseCache | None:
    settings = config.cache
    if not settings.enabled:
        return None
    if settings.redis_url and (redis is None or redis.url != settings.redis_url):
        own = SharedRedis(settings.redis_url, prefix=config.redis.prefix,
                          op_timeout=config.redis.op_timeout)
        return TieredCache(settings, own, owns_redis=True)
    return TieredCache(settings, redis)
