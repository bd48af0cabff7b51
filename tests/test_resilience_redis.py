"""Key cooldowns and disabled keys shared by two gateway instances through one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import start_gateway
from tests.fakes.faulty_upstream import FaultyUpstream, start_faulty, status
from tests.test_resilience import HI, ask, config, health, oa

A, B = "sk-shared-key-alpha1", "sk-shared-key-bravo2"


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    fake = await start_faulty()
    yield fake
    await fake.stop()


async def test_two_instances_share_cooldowns_and_disabled_keys(
        aiohttp_server: Any, faulty: FaultyUpstream, redis_url: str, redis_prefix: str) -> None:
    cfg = config(faulty.base_url, keys=[A, B])
    cfg["redis"] = {"url": redis_url, "prefix": redis_prefix}
    one = await start_gateway(aiohttp_server, cfg)
    two = await start_gateway(aiohttp_server, cfg)

    faulty.faults.append(status(429, "30", key=A))
    assert await ask(one) == "Hello from the faulty upstream"   # A cooled, B answered
    assert await ask(two) == "Hello from the faulty upstream"   # two starts with A: skipped
    assert [r.key for r in faulty.requests] == [A, B, B]
    keys = (await health(two))["providers"]["fx"]["keys"]
    assert 25 < keys[0]["cooling_secs"] <= 30 and "cooling_secs" not in keys[1]

    faulty.faults.append(status(401, key=B))
    async with oa(two) as client:   # B refused on two; A is cooling: nothing left
        with pytest.raises(openai.RateLimitError) as exc:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert 25 <= int(exc.value.response.headers["retry-after"]) <= 30
    await asyncio.sleep(0.6)   # one's view of Redis is at most SYNC_SECS old
    async with oa(one) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert len(faulty.requests) == 4   # one never called the upstream for it
    assert [k["disabled"] for k in (await health(one))["providers"]["fx"]["keys"]] == [False, True]

    # Redis holds hashes of the keys, never the keys
    client = aioredis.Redis.from_url(redis_url)
    try:
        names = [n async for n in client.scan_iter(match=redis_prefix + "keypool:*")]
        assert len(names) == 2
        values = [await client.get(n) for n in names]
    finally:
        await client.aclose()
    dump = b" ".join(names + [v or b"" for v in values]).decode()
    assert A not in dump and B not in dump and "shared-key" not in dump


async def test_redis_down_falls_back_to_memory(aiohttp_server: Any, faulty: FaultyUpstream,
                                               redis_server: Any, redis_prefix: str) -> None:
    cfg = config(faulty.base_url, keys=[A, B])
    cfg["redis"] = {"url": redis_server.url, "prefix": redis_prefix}
    url = await start_gateway(aiohttp_server, cfg)
    redis_server.stop()
    faulty.faults.append(status(429, "30", key=A))
    assert await ask(url) == "Hello from the faulty upstream"
    assert await ask(url) == "Hello from the faulty upstream"
    assert [r.key for r in faulty.requests] == [A, B, B]   # the cooldown held in memory
