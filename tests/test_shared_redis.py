"""SharedRedis against a real redis-server: stopped, paused and back again."""

from __future__ import annotations

import asyncio
import time

from p5proxy.masking import mask_text
from p5proxy.shared_redis import SharedRedis
from tests.fakes.redis_server import RedisServer


async def test_a_stopped_redis_opens_the_circuit_and_a_restarted_one_closes_it(
        redis_server: RedisServer) -> None:
    r = SharedRedis(redis_server.url, op_timeout=0.2)
    try:
        assert await r.call(lambda c: c.set("k", "1"), False)
        redis_server.stop()
        assert await r.call(lambda c: c.get("k"), "fallback") == "fallback"
        assert not r.up and r.trips == 1
        # while open, callers get their default without waiting for Redis
        started = time.monotonic()
        assert await r.call(lambda c: c.get("k"), "fallback") == "fallback"
        assert time.monotonic() - started < 0.05
        redis_server.start()
        await asyncio.sleep(1.1)
        assert await r.call(lambda c: c.ping(), False) is True
        assert r.up
    finally:
        await r.close()


async def test_a_paused_redis_costs_at_most_the_operation_deadline(
        redis_server: RedisServer) -> None:
    r = SharedRedis(redis_server.url, op_timeout=0.2)
    try:
        assert await r.call(lambda c: c.ping(), False)
        redis_server.pause()
        started = time.monotonic()
        assert await r.call(lambda c: c.get("k"), None) is None
        assert time.monotonic() - started < 1.0
        assert "Timeout" in (r.describe()["last_error"] or "")
    finally:
        redis_server.resume()
        await r.close()


def test_health_never_shows_the_password() -> None:
    assert mask_text("redis://:s3cret@cache:6379/0") == "redis://:****@cache:6379/0"
    assert mask_text("redis://user:s3cret@cache/1") == "redis://user:****@cache/1"
    assert mask_text("rediss://cache:6379/0?password=s3cret") == "rediss://cache:6379/0?password=****"
    assert mask_text("redis://cache:6379/0") == "redis://cache:6379/0"
    assert mask_text("postgresql://app:pa/ss@db/x") == "postgresql://app:****@db/x"   # unencoded /
    assert "s3cret" not in str(SharedRedis("redis://:s3cret@127.0.0.1:1/0").describe())
