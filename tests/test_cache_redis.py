"""The Redis tier in trouble, and two gateway processes sharing one Redis.

Redis here is always a private `redis-server` the test starts, stops, pauses or kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from p5proxy.config import CacheConfig
from p5proxy.flight import Flight
from p5proxy.shared_redis import SharedRedis
from p5proxy_plugins.cache_response import TieredCache
from tests.fakes.fixtures import eventually
from tests.processes import GatewayProcess
from tests.fakes.redis_server import RedisServer
from tests.fakes.replies import Reply
from tests.test_cache import AH, LONG, MSG, health, post, stream, streamed_text


def ask(i: int) -> dict[str, Any]:
    return {**MSG, "messages": [{"role": "user", "content": f"question {i % 25}"}]}


async def test_redis_killed_and_restarted_under_load_fails_no_request(
        make_gateway: Any, redis_server: RedisServer) -> None:
    gw = await make_gateway(cache={"enabled": True, "redis_url": redis_server.url})
    statuses: list[int] = []

    async def client(n: int) -> None:
        for i in range(n):
            status, body, _ = await post(gw, "/v1/messages", ask(i))
            assert body["type"] == "message", body
            statuses.append(status)

    load = asyncio.gather(*(client(30) for _ in range(8)))
    await eventually(lambda: len(statuses) >= 60, timeout=30)   # a quarter done: kill it
    redis_server.kill()
    await load
    assert statuses == [200] * 240
    stats = (await health(gw))["cache"]
    assert stats["redis"]["failures"] > 0 and stats["redis"]["circuit_trips"] >= 1
    # back again: once the circuit's pause (doubled with every failed retry) is over, the next
    # request uses Redis again
    redis_server.start()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        status, _, _ = await post(gw, "/v1/messages", ask(1000))
        assert status == 200
        if (await health(gw))["cache"]["redis"]["up"]:
            break
        await asyncio.sleep(0.5)
    assert (await health(gw))["cache"]["redis"]["up"] is True


async def test_a_paused_redis_slows_requests_only_briefly(
        make_gateway: Any, redis_server: RedisServer) -> None:
    gw = await make_gateway(cache={"enabled": True, "redis_url": redis_server.url})
    await post(gw, "/v1/messages", ask(0))
    redis_server.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(post(gw, "/v1/messages", ask(i)) for i in range(1, 21)))
        assert [r[0] for r in results] == [200] * 20
        assert time.monotonic() - started < 5   # a few operation deadlines, not a hang
        # the memory tier still answers what it holds
        assert (await post(gw, "/v1/messages", ask(0)))[2]["X-Proxy-Cache"] == "HIT"
    finally:
        redis_server.resume()


# --- two processes ---------------------------------------------------------------------------

def gateway_config(upstream: str, redis_url: str) -> dict[str, Any]:
    return {"cache": {"enabled": True, "redis_url": redis_url, "lease_secs": 1},
            "providers": {"oa": {"type": "openai", "base_url": upstream, "api_key": "k"}},
            "models": {"claude-sonnet-4-5": {"provider": "oa", "model": "qwen3-coder"}}}


Gateways = tuple[Any, GatewayProcess, GatewayProcess]


def kill(gw: GatewayProcess) -> None:
    """SIGKILL: the instance vanishes without releasing anything."""
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGKILL)


@pytest.fixture
async def two_gateways(tmp_path: Path, fake_openai: Any,
                       redis_server: RedisServer) -> AsyncIterator[Gateways]:
    """Two `p5proxy serve` processes sharing one Redis, in front of one fake upstream."""
    fake, upstream = fake_openai
    async with contextlib.AsyncExitStack() as stack:
        pair = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            pair.append(await stack.enter_async_context(
                GatewayProcess(tmp_path / name, gateway_config(upstream, redis_server.url))))
        yield fake, pair[0], pair[1]


async def test_two_processes_make_one_upstream_call_for_twenty_requests(
        two_gateways: Gateways) -> None:
    fake, one, two = two_gateways
    fake.replies = [Reply(text=LONG, chunk_size=8, delay=0.03)]
    first = asyncio.create_task(stream(one, "/v1/messages", MSG))
    await eventually(lambda: fake.open_streams == 1, timeout=5)
    rest = await asyncio.gather(
        *(stream(gw, "/v1/messages", MSG) for gw in [one, two] * 5),
        *(post(gw, "/v1/messages", MSG) for gw in [one, two] * 5))
    events, _ = await first
    assert streamed_text(events) == LONG
    for events, h in rest[:10]:
        assert streamed_text(events) == LONG and b"message_stop" in events[-1]
        assert h["X-Proxy-Cache"] == "HIT"
    for status, body, h in rest[10:]:
        assert status == 200 and body["content"][0]["text"] == LONG
    assert len(fake.requests) == 1
    # and the stored answer is shared too
    await asyncio.sleep(0.2)
    assert (await post(two, "/v1/messages", MSG))[2]["X-Proxy-Cache"] == "HIT"


async def test_a_leader_that_dies_mid_stream_ends_its_followers_cleanly(
        two_gateways: Gateways) -> None:
    fake, one, two = two_gateways
    fake.replies = [Reply(text=LONG, chunk_size=4, delay=0.05)]
    leader = asyncio.create_task(stream(one, "/v1/messages", MSG))
    await eventually(lambda: fake.open_streams == 1, timeout=5)

    async def follow() -> tuple[list[bytes], float]:
        async with aiohttp.ClientSession() as s:
            async with s.post(two.url + "/v1/messages", json={**MSG, "stream": True},
                              headers=AH) as resp:
                assert resp.status == 200 and resp.headers["X-Proxy-Cache"] == "HIT"
                events = [await resp.content.readuntil(b"\n\n")]
                kill(one)   # the leader's process dies
                killed = time.monotonic()
                events += (await resp.read()).split(b"\n\n")
                return [e for e in events if e.strip()], time.monotonic() - killed

    events, took = await follow()
    assert b"event: error" in events[-1], events[-3:]
    assert b"message_stop" not in b"".join(events)   # never a made-up normal ending
    assert took < 8
    with pytest.raises(Exception):
        await leader


async def test_a_leader_that_dies_before_answering_is_replaced(
        two_gateways: Gateways) -> None:
    fake, one, two = two_gateways
    calls: list[float] = []

    async def slow_then_fine(body: dict[str, Any]) -> Reply:
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(30)   # the first instance's call never answers
        return Reply(text="answered by the survivor")
    fake.responder = slow_then_fine
    leader = asyncio.create_task(post(one, "/v1/messages", MSG))
    await eventually(lambda: len(calls) == 1, timeout=5)
    follower = asyncio.create_task(post(two, "/v1/messages", MSG))
    await asyncio.sleep(0.3)
    kill(one)
    status, body, h = await asyncio.wait_for(follower, 10)
    assert status == 200 and body["content"][0]["text"] == "answered by the survivor"
    assert len(calls) == 2
    with pytest.raises(Exception):
        await leader
    stats = (await health(two))["cache"]
    assert stats["takeovers"] == 1


def test_events_survive_the_trip_through_redis() -> None:
    from p5proxy.canonical import (BlockStart, MessageDelta, MessageStart, TextDelta,
                                   ThinkingPart, ToolCallPart, Usage)
    from p5proxy.eventcodec import decode_event, encode_event
    events = [MessageStart("msg_1", "m", Usage(3, 0, 1, 2, 0, {"service_tier": "x"}, "openai")),
              BlockStart(0, ThinkingPart("", "sig", None)), TextDelta(1, "héllo"),
              TextDelta(1, "!", {"content": [{"token": "!", "logprob": -0.5, "top_logprobs": []}]}),
              TextDelta(1, "No.", None, True),
              BlockStart(2, ToolCallPart("call_1", "f", {})),
              MessageDelta("tool_use", None, Usage(3, 9))]
    wire = orjson.loads(orjson.dumps([encode_event(e) for e in events]))
    assert [decode_event(v) for v in wire] == events


async def test_an_instance_does_not_follow_its_own_answer_through_redis(
        redis_url: str, redis_prefix: str) -> None:
    """A request that missed an answer in memory while it asked Redis, just as this instance's
    flight for it ended, finds the lease still held by this instance's relay: it asks upstream
    itself (relaying nothing) instead of reading its own answer back through Redis, where a
    Redis failure would end it with an error after part of it."""
    cache = TieredCache(CacheConfig(enabled=True, lease_secs=5),
                        SharedRedis(redis_url, prefix=redis_prefix), owns_redis=True)
    try:
        assert await cache.follow("k") is None          # free: this instance leads
        leader = Flight("k", heartbeat_secs=0)
        cache.lead("k", leader)                            # its relay runs until the flight ends
        assert await cache.follow("k") is None          # held by this instance: not followed
        cache.lead("k", Flight("k", heartbeat_secs=0))     # and the running relay is left alone
        assert len(cache._relaying) == 1
        other = TieredCache(CacheConfig(enabled=True, lease_secs=5),
                            SharedRedis(redis_url, prefix=redis_prefix), owns_redis=True)
        try:
            relay = await other.follow("k")                # another instance does follow it
            assert relay is not None
            await relay.aclose()
        finally:
            await other.close()
    finally:
        await cache.close()
