"""Per-key requests and tokens per minute: 429 with Retry-After in each protocol's shape, the
window freeing up, token accounting from the upstream's usage, counters shared through Redis by
two gateways, and Redis going away without failing a request."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

import p5proxy.ratelimit
from p5proxy.ratelimit import WINDOW, Check, MemoryWindows, retry_after
from tests.conftest import Gateway
from tests.fakes.redis_server import RedisServer
from tests.fakes.replies import Reply

KEY = "sk-limited-0123456789"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MSG = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
OA = {"Authorization": f"Bearer {KEY}"}
AN = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


class Clock:
    """Stands in for the `time` module inside p5proxy.ratelimit (its wall clock)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_800_000_000.0 + 5)   # 5 s into a minute
    monkeypatch.setattr(p5proxy.ratelimit, "time", fake)
    return fake


def limited(**limits: Any) -> dict[str, Any]:
    return {"keys": [{"id": "team", "key": KEY, **limits}, "sk-free-key-000"]}


async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers


async def test_requests_per_minute_then_the_window_frees_up(make_gateway: Any, clock: Clock) -> None:
    gw = await make_gateway(auth=limited(rpm=3))
    for i in range(3):
        status, body, _ = await post(gw.url + ("/v1/messages" if i % 2 else "/v1/chat/completions"),
                                     MSG if i % 2 else CHAT, AN if i % 2 else OA)
        assert status == 200, body
    status, body, headers = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded" and "3 requests per minute" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 2 * WINDOW and headers["x-should-retry"] == "true"
    wait = int(headers["Retry-After"])
    status, body, headers = await post(gw.url + "/v1/messages", MSG, AN)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert headers["Retry-After"] == str(wait)
    # another key is not affected; refused requests were not sent upstream
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT,
                              {"Authorization": "Bearer sk-free-key-000"})
    assert status == 200 and len(gw.openai.requests) == 4
    clock.now += wait                           # Retry-After is enough...
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 429                        # ...for one more request, in a sliding window
    clock.now += 2 * WINDOW
    for _ in range(3):
        status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
        assert status == 200


async def test_sdks_see_rate_limit_errors_with_retry_after(make_gateway: Any, clock: Clock) -> None:
    gw = await make_gateway(auth=limited(rpm=1))
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key=KEY, max_retries=0) as oa:
        await oa.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as limited_oa:
            await oa.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert int(limited_oa.value.response.headers["retry-after"]) >= 1
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY, max_retries=0) as an:
        with pytest.raises(anthropic.RateLimitError) as limited_an:
            await an.messages.create(**MSG)  # type: ignore[arg-type]
    assert limited_an.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_tokens_per_minute_count_the_estimate_then_the_reported_usage(
        make_gateway: Any, clock: Clock) -> None:
    gw = await make_gateway(auth=limited(tpm=400))
    gw.openai.replies.append(Reply(text="ok", usage={"input": 10, "output": 300}))
    status, body, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200, body
    # 310 tokens used: a small request (estimate ~20) fits, and its usage (90) is counted too
    gw.openai.replies.append(Reply(text="ok", usage={"input": 10, "output": 80}))
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200
    status, body, headers = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 429 and "400 tokens per minute" in body["error"]["message"]
    assert int(headers["Retry-After"]) >= 1
    clock.now += 2 * WINDOW
    # a stream's usage arrives in its last events: counted once the stream is over
    gw.openai.replies.append(Reply(text="streamed", usage={"input": 10, "output": 390}))
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/v1/messages", json={**MSG, "stream": True},
                                headers=AN) as resp:
            assert resp.status == 200 and b"message_stop" in await resp.read()
    await asyncio.sleep(0.2)   # the handler closes its upstream events after the last byte
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 429


async def test_a_request_larger_than_the_token_limit_is_refused_for_good(
        make_gateway: Any, clock: Clock) -> None:
    gw = await make_gateway(auth=limited(tpm=100))
    big = {**CHAT, "messages": [{"role": "user", "content": "word " * 400}]}
    status, body, headers = await post(gw.url + "/v1/chat/completions", big, OA)
    assert status == 429 and "larger than the tokens-per-minute limit" in body["error"]["message"]
    assert "Retry-After" not in headers and headers["x-should-retry"] == "false"
    assert gw.openai.requests == []


async def test_count_tokens_and_models_do_not_count_against_limits(
        make_gateway: Any, clock: Clock) -> None:
    gw = await make_gateway(auth=limited(rpm=1))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(gw.url + "/v1/messages/count_tokens", json=MSG,
                                    headers=AN) as resp:
                assert resp.status == 200
            async with session.get(gw.url + "/v1/models", headers=OA) as resp:
                assert resp.status == 200
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200


def test_sliding_window_arithmetic() -> None:
    mem = MemoryWindows()
    t0 = 600.0   # the start of a minute
    assert all(mem.hit([Check("k", 10, 1)], t0 + 50).ok for _ in range(10))
    refused = mem.hit([Check("k", 10, 1)], t0 + 50)
    assert not refused.ok and refused.used == 10
    # next minute, 30 s in: the previous minute weighs half (5), so 5 more fit
    assert sum(mem.hit([Check("k", 10, 1)], t0 + 90).ok for _ in range(8)) == 5
    # Retry-After is when use + cost fits again
    assert retry_after(limit=10, cost=1, cur=0, prev=10, elapsed=0) == pytest.approx(6.0)
    assert retry_after(limit=10, cost=1, cur=10, prev=0, elapsed=20) == pytest.approx(46.0)
    assert retry_after(limit=10, cost=11, cur=0, prev=0, elapsed=0) == float("inf")
    # several limits are checked together, and a refusal adds to none of them
    both = [Check("r", 5, 1), Check("t", 100, 90)]
    assert mem.hit(both, t0 + 200).ok
    assert not mem.hit(both, t0 + 201).ok
    assert mem.hit([Check("r", 5, 4)], t0 + 202).ok   # "r" holds 1 + 4: the refusal added nothing


async def test_two_gateways_share_counters_through_redis(
        make_gateway: Any, clock: Clock, redis_url: str, redis_prefix: str) -> None:
    shared = {"url": redis_url, "prefix": redis_prefix}
    first = await make_gateway(auth=limited(rpm=3, tpm=100_000), redis=shared)
    second = await make_gateway(auth=limited(rpm=3, tpm=100_000), redis=shared)
    for gw in (first, second, first):
        status, body, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
        assert status == 200, body
    status, body, headers = await post(second.url + "/v1/chat/completions", CHAT, OA)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    async with aiohttp.ClientSession() as session:
        async with session.get(first.url + "/health") as resp:
            health = await resp.json()
    assert health["client_keys"]["limits_backend"] == "redis"
    clock.now += 2 * WINDOW
    status, _, _ = await post(second.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200


async def test_limits_fall_back_to_memory_while_redis_is_down(
        make_gateway: Any, clock: Clock, redis_server: RedisServer, redis_prefix: str) -> None:
    gw = await make_gateway(auth=limited(rpm=2, tpm=100_000),
                            redis={"url": redis_server.url, "prefix": redis_prefix,
                                   "op_timeout": 0.2})
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200
    redis_server.stop()
    statuses = [(await post(gw.url + "/v1/chat/completions", CHAT, OA))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]   # never a 5xx: this process counts alone meanwhile


async def test_tokens_used_through_one_gateway_count_in_the_other(
        make_gateway: Any, clock: Clock, redis_url: str, redis_prefix: str) -> None:
    shared = {"url": redis_url, "prefix": redis_prefix, "op_timeout": 2.0}   # generous under load
    first = await make_gateway(auth=limited(tpm=1000), redis=shared)
    second = await make_gateway(auth=limited(tpm=1000), redis=shared)
    first.openai.replies.append(Reply(text="long answer", usage={"input": 10, "output": 990}))
    status, body, _ = await post(first.url + "/v1/chat/completions", CHAT, OA)
    assert status == 200, body
    await asyncio.sleep(1.0)   # the usage is added to Redis in the background, never waited for
    status, body, headers = await post(second.url + "/v1/messages", MSG, AN)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert "1000 tokens per minute" in body["error"]["message"] and int(headers["Retry-After"]) >= 1
