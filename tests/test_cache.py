"""Response cache and in-flight de-duplication, seen from real clients over real sockets.

The gateway runs with the cache on (the shared fixture turns it off); the fake upstreams count
the calls that reach them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes.fixtures import eventually
from tests.fakes.replies import Reply

AH = {"anthropic-version": "2023-06-01", "x-api-key": "client-key"}
MSG: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "hi"}]}
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
LONG = "The quick brown fox jumps over the lazy dog. " * 8


class Served(Protocol):
    """Anything serving the gateway: the in-process fixture or a `p5proxy serve` process."""
    url: str


async def cached_gateway(make_gateway: Any, **cache: Any) -> Gateway:
    return await make_gateway(cache={"enabled": True, **cache})


async def post(gw: Served, path: str, body: Any, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + path, data=orjson.dumps(body),
                          headers=headers or AH) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw), resp.headers


async def stream(gw: Served, path: str, body: Any, headers: dict[str, str] | None = None
                 ) -> tuple[list[bytes], Any]:
    """The raw SSE events of a streaming request, and the response headers."""
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + path, json={**body, "stream": True},
                          headers=headers or AH) as resp:
            assert resp.status == 200
            text = await resp.read()
            return [e for e in text.split(b"\n\n") if e.strip()], resp.headers


def streamed_text(events: list[bytes]) -> str:
    """The text of an Anthropic event stream, from its text deltas."""
    out = []
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data: ") and b'"text_delta"' in line:
                out.append(orjson.loads(line[6:])["delta"]["text"])
    return "".join(out)


def cache_headers(headers: Any) -> tuple[str, str]:
    return headers["X-Proxy-Cache"], headers["X-Proxy-Cache-Source"]


async def health(gw: Served) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/health") as resp:
            data: dict[str, Any] = await resp.json()
            return data


# --- hits and misses ---------------------------------------------------------------------------

async def test_a_repeated_request_is_answered_from_memory(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text="cached answer", usage={"input": 9, "output": 3})]
    status, first, h1 = await post(gw, "/v1/messages", MSG)
    status2, second, h2 = await post(gw, "/v1/messages", MSG)
    assert status == status2 == 200
    assert cache_headers(h1) == ("MISS", "live")
    assert cache_headers(h2) == ("HIT", "memory")
    assert len(gw.openai.requests) == 1
    assert second["content"] == first["content"] == [{"type": "text", "text": "cached answer"}]
    assert second["usage"]["output_tokens"] == 3
    assert second["id"] != first["id"]   # fresh ids on every answer
    stats = (await health(gw))["cache"]
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    assert stats["bytes"] > 0


async def test_a_streaming_hit_is_a_real_stream_of_many_events(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG)]
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="client-key", max_retries=0)
    raw = await client.messages.with_raw_response.create(**MSG)   # stored by a plain request
    assert raw.headers["X-Proxy-Cache"] == "MISS"
    async with client.messages.stream(**MSG) as s:
        deltas = [e for e in [ev async for ev in s] if e.type == "content_block_delta"]
        final = await s.get_final_message()
    await client.close()
    assert len(deltas) > 3                                   # not one lump
    assert final.content[0].text == LONG                    # type: ignore[union-attr]
    assert final.id.startswith("msg_")
    assert len(gw.openai.requests) == 1


async def test_stream_then_plain_and_across_protocols(make_gateway: Any) -> None:
    """A streamed answer serves a later non-streaming request, and OpenAI clients of the same
    route and conversation share the entry with... nobody else: the client protocol is part
    of the key, but the stream flag is not."""
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text="streamed once")]
    oai = openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0)
    chunks = [c async for c in await oai.chat.completions.create(**CHAT, stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed once"
    raw = await oai.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["X-Proxy-Cache"] == "HIT"
    assert raw.parse().choices[0].message.content == "streamed once"
    await oai.close()
    assert len(gw.openai.requests) == 1


async def test_what_is_and_is_not_in_the_key(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    base = {**MSG, "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.1; cch=aaaa;"},
        {"type": "text", "text": "You are terse."}],
        "metadata": {"user_id": "session-1"}}
    await post(gw, "/v1/messages", base)
    # noise: another conversation's billing line and user id, the stream flag
    same = {**base, "metadata": {"user_id": "session-2"}, "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.1; cch=bbbb;"},
        {"type": "text", "text": "You are terse."}]}
    assert (await post(gw, "/v1/messages", same))[2]["X-Proxy-Cache"] == "HIT"
    assert (await stream(gw, "/v1/messages", same))[1]["X-Proxy-Cache"] == "HIT"
    # what shapes the answer
    for changed in ({"temperature": 0.2}, {"max_tokens": 65}, {"stop_sequences": ["END"]},
                    {"system": "You are verbose."},
                    {"messages": [{"role": "user", "content": "hello"}]},
                    {"tools": [{"name": "t", "input_schema": {"type": "object"}}]},
                    {"model": "claude-native"}):
        _, _, h = await post(gw, "/v1/messages", {**base, **changed})
        assert h["X-Proxy-Cache"] == "MISS", changed
    # another alias of the same route is the same question
    _, _, h = await post(gw, "/v1/messages", {**base, "model": "claude-haiku-4-5"})
    assert h["X-Proxy-Cache"] == "MISS"     # claude-haiku-* routes to another upstream model


async def test_each_client_key_has_its_own_entries_unless_shared(make_gateway: Any) -> None:
    for shared, expected in ((False, "MISS"), (True, "HIT")):
        gw = await cached_gateway(make_gateway, shared_across_keys=shared)
        await post(gw, "/v1/messages", MSG, {**AH, "x-api-key": "alice"})
        _, _, h = await post(gw, "/v1/messages", MSG, {**AH, "x-api-key": "bob"})
        assert h["X-Proxy-Cache"] == expected
        _, _, h = await post(gw, "/v1/messages", MSG, {**AH, "x-api-key": "alice"})
        assert h["X-Proxy-Cache"] == "HIT"


async def test_bypass_and_no_store(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text="one"), Reply(text="two"), Reply(text="three")]
    _, body, h = await post(gw, "/v1/messages", MSG, {**AH, "X-Proxy-Cache": "bypass"})
    assert cache_headers(h) == ("BYPASS", "live") and body["content"][0]["text"] == "one"
    _, body, h = await post(gw, "/v1/messages", MSG, {**AH, "Cache-Control": "no-cache"})
    assert cache_headers(h) == ("BYPASS", "live") and body["content"][0]["text"] == "two"
    _, body, h = await post(gw, "/v1/messages", MSG)     # the fresh answer was stored
    assert cache_headers(h) == ("HIT", "memory") and body["content"][0]["text"] == "two"
    _, body, h = await post(gw, "/v1/messages", MSG, {**AH, "Cache-Control": "no-store"})
    assert h["X-Proxy-Cache"] == "BYPASS" and body["content"][0]["text"] == "three"
    _, body, _ = await post(gw, "/v1/messages", MSG)     # ... and no-store kept nothing
    assert body["content"][0]["text"] == "two"
    assert (await health(gw))["cache"]["bypasses"] == 3


async def test_disabled_cache_says_so(make_gateway: Any) -> None:
    gw = await make_gateway()
    _, _, h = await post(gw, "/v1/messages", MSG)
    assert cache_headers(h) == ("DISABLED", "live")
    _, _, h = await post(gw, "/v1/messages", MSG)
    assert h["X-Proxy-Cache"] == "DISABLED" and len(gw.openai.requests) == 2
    assert (await health(gw))["cache"] == {"enabled": False}


# --- what is never stored --------------------------------------------------------------------

async def test_errors_and_truncated_streams_are_not_stored(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(status=500), Reply(text="partial answer " * 5, break_after=3),
                         Reply(text="good")]
    status, body, h = await post(gw, "/v1/messages", MSG)
    assert status == 500 and body["type"] == "error"
    events, h = await stream(gw, "/v1/messages", MSG)
    assert b"event: error" in events[-1]
    status, body, h = await post(gw, "/v1/messages", MSG)
    assert status == 200 and body["content"][0]["text"] == "good"
    assert h["X-Proxy-Cache"] == "MISS"
    assert len(gw.openai.requests) == 3


async def test_answers_with_logprobs_are_served_not_stored(make_gateway: Any) -> None:
    """A replay would give the text without them: such an answer goes upstream each time."""
    gw = await cached_gateway(make_gateway)
    lp = {"content": [{"token": "good", "logprob": -0.2, "bytes": [103, 111, 111, 100],
                       "top_logprobs": []}], "refusal": None}
    gw.openai.replies = [Reply(text="good", logprobs=lp), Reply(text="good", logprobs=lp)]
    body = {"model": "gpt-4o", "logprobs": True, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        status, answer, h = await post(gw, "/v1/chat/completions", body,
                                       {"Authorization": "Bearer k"})
        assert status == 200 and answer["choices"][0]["logprobs"] == lp
        assert h["X-Proxy-Cache"] == "MISS"
    assert len(gw.openai.requests) == 2


async def test_answers_with_several_choices_are_served_not_stored(make_gateway: Any) -> None:
    """An entry keeps one choice: a hit for n > 1 would lose the others."""
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text="one"), Reply(text="one")]
    body = {"model": "gpt-4o", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        status, _, h = await post(gw, "/v1/chat/completions", body,
                                  {"Authorization": "Bearer k"})
        assert status == 200 and h["X-Proxy-Cache"] == "MISS"
    assert len(gw.openai.requests) == 2


async def test_oversize_answers_are_served_not_stored(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway, max_entry_bytes=200)
    gw.openai.replies = [Reply(text=LONG), Reply(text=LONG)]
    for _ in range(2):
        status, body, h = await post(gw, "/v1/messages", MSG)
        assert status == 200 and body["content"][0]["text"] == LONG
        assert h["X-Proxy-Cache"] == "MISS"
    stats = (await health(gw))["cache"]
    assert stats["oversize_skips"] == 2 and stats["entries"] == 0


async def test_entries_expire_and_tool_requests_use_their_own_ttl(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway, ttl_secs=30, tool_ttl_secs=0.3)
    tools = {**MSG, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    await post(gw, "/v1/messages", tools)
    await post(gw, "/v1/messages", MSG)
    assert (await post(gw, "/v1/messages", tools))[2]["X-Proxy-Cache"] == "HIT"
    await asyncio.sleep(0.4)
    assert (await post(gw, "/v1/messages", tools))[2]["X-Proxy-Cache"] == "MISS"
    assert (await post(gw, "/v1/messages", MSG))[2]["X-Proxy-Cache"] == "HIT"


async def test_the_lru_keeps_the_most_recent_entries(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway, memory_entries=2)
    asks = [{**MSG, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    for ask in asks:
        await post(gw, "/v1/messages", ask)
    assert (await post(gw, "/v1/messages", asks[0]))[2]["X-Proxy-Cache"] == "MISS"
    assert (await post(gw, "/v1/messages", asks[2]))[2]["X-Proxy-Cache"] == "HIT"
    assert (await health(gw))["cache"]["entries"] == 2


# --- in-flight de-duplication ------------------------------------------------------------------

async def test_fifty_identical_concurrent_requests_make_one_upstream_call(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG, chunk_size=16, delay=0.01)] * 2
    oai = openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0)

    async def one(i: int) -> str:
        kind = i % 4
        if kind == 0:   # Anthropic, non-streaming
            m = await ant.messages.create(**{**MSG, "model": "claude-sonnet-4-5"})
            return m.content[0].text                     # type: ignore[union-attr]
        if kind == 1:   # Anthropic, streaming
            async with ant.messages.stream(**MSG) as s:
                return (await s.get_final_message()).content[0].text  # type: ignore[union-attr]
        chat = {**CHAT, "model": "claude-sonnet-4-5"}   # same route, other protocol
        if kind == 2:
            c = await oai.chat.completions.create(**chat)
            return c.choices[0].message.content or ""
        parts = [ch.choices[0].delta.content or "" async for ch in
                 await oai.chat.completions.create(**chat, stream=True) if ch.choices]
        return "".join(parts)

    texts = await asyncio.gather(*(one(i) for i in range(50)))
    await oai.close()
    await ant.close()
    assert texts == [LONG] * 50
    # one call per client protocol: the protocol is part of the key
    assert len(gw.openai.requests) == 2
    stats = (await health(gw))["cache"]
    assert stats["inflight_joins"] == 48


async def test_followers_get_the_stream_live_from_the_start(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG, chunk_size=8, delay=0.02)]
    leader = asyncio.create_task(stream(gw, "/v1/messages", MSG))
    await eventually(lambda: gw.openai.open_streams == 1)
    await asyncio.sleep(0.2)   # the leader is well into its answer
    follower_events, h = await stream(gw, "/v1/messages", MSG)
    leader_events, _ = await leader
    assert cache_headers(h) == ("HIT", "inflight")
    assert len([e for e in follower_events if b"text_delta" in e]) > 10
    assert len(follower_events) == len(leader_events)
    assert streamed_text(follower_events) == streamed_text(leader_events) == LONG
    assert len(gw.openai.requests) == 1


async def test_leader_and_follower_get_keepalives_while_the_upstream_is_silent(
        make_gateway: Any) -> None:
    """Both read the shared answer; each gets its own keep-alives during the upstream's pauses
    (longer than server.heartbeat_secs), then the whole text, and the answer is stored."""
    gw = await make_gateway(cache={"enabled": True}, server={"heartbeat_secs": 0.15})
    gw.openai.replies = [Reply(text="slow and steady", chunk_size=5, delay=0.5)]
    leader = asyncio.create_task(stream(gw, "/v1/messages", MSG))
    await eventually(lambda: gw.openai.open_streams == 1)
    await asyncio.sleep(0.3)
    follower_events, h = await stream(gw, "/v1/messages", MSG)
    leader_events, _ = await leader
    assert cache_headers(h) == ("HIT", "inflight")
    for events in (leader_events, follower_events):
        assert sum(e.startswith(b"event: ping") for e in events) >= 2
        assert streamed_text(events) == "slow and steady"
        assert events[-1].startswith(b"event: message_stop")
    status, body, h = await post(gw, "/v1/messages", MSG)
    assert status == 200 and body["content"][0]["text"] == "slow and steady"
    assert cache_headers(h) == ("HIT", "memory")
    assert len(gw.openai.requests) == 1


async def test_the_upstream_call_outlives_its_first_client_while_others_wait(
        make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG, chunk_size=8, delay=0.02)]

    async def leave_early() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(gw.url + "/v1/messages", json={**MSG, "stream": True},
                              headers=AH) as resp:
                await resp.content.readline()   # the first bytes,
                await asyncio.sleep(0.3)          # time for the follower to join, then gone

    leader = asyncio.create_task(leave_early())
    await eventually(lambda: gw.openai.open_streams == 1)
    follower_events, h = await stream(gw, "/v1/messages", MSG)
    await leader
    assert h["X-Proxy-Cache"] == "HIT"
    assert b"message_stop" in follower_events[-1]
    assert gw.openai.cancelled == 0 and len(gw.openai.requests) == 1
    # complete, so it was stored as well
    assert (await post(gw, "/v1/messages", MSG))[2]["X-Proxy-Cache-Source"] == "memory"


async def test_the_upstream_call_ends_when_the_last_client_leaves(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG, chunk_size=4, delay=0.05)]

    async def read_a_little() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(gw.url + "/v1/messages", json={**MSG, "stream": True},
                              headers=AH) as resp:
                await resp.content.readline()
                await asyncio.sleep(0.1)

    await asyncio.gather(read_a_little(), read_a_little())
    await eventually(lambda: gw.openai.cancelled == 1, timeout=1.5)
    assert len(gw.openai.requests) == 1
    assert (await health(gw))["cache"]["entries"] == 0   # a cancelled stream is not kept


async def test_an_upstream_error_reaches_every_waiter(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)

    async def slow_failure(body: dict[str, Any]) -> Reply:
        await asyncio.sleep(0.3)
        return Reply(status=503, error={"error": {"message": "overloaded", "type": "server_error"}})
    gw.openai.responder = slow_failure
    results = await asyncio.gather(*(post(gw, "/v1/messages", MSG) for _ in range(5)),
                                   post(gw, "/v1/chat/completions", {**CHAT, "model":
                                                                    "claude-sonnet-4-5"},
                                        {"Authorization": "Bearer k"}))
    # the same failure, in each client's protocol: Anthropic says overloaded with its 529
    assert [r[0] for r in results] == [529] * 5 + [503]
    assert all(r[1]["type"] == "error" for r in results[:5])
    assert results[5][1]["error"]["message"]
    assert len(gw.openai.requests) == 2   # one per protocol
    assert (await health(gw))["cache"]["entries"] == 0


async def test_a_mid_stream_failure_reaches_every_streaming_waiter(make_gateway: Any) -> None:
    gw = await cached_gateway(make_gateway)
    gw.openai.replies = [Reply(text=LONG, chunk_size=8, delay=0.02, break_after=12)]
    results = await asyncio.gather(*(stream(gw, "/v1/messages", MSG) for _ in range(3)))
    for events, _ in results:
        assert b"event: error" in events[-1]
    assert len(gw.openai.requests) == 1


# --- Redis as the second tier --------------------------------------------------------------

async def test_redis_tier_serves_another_instance(make_gateway: Any, redis_url: str,
                                                  redis_prefix: str) -> None:
    settings = {"redis_url": redis_url}
    one = await make_gateway(cache={"enabled": True, **settings}, redis={"prefix": redis_prefix})
    two = await make_gateway(cache={"enabled": True, **settings}, redis={"prefix": redis_prefix})
    one.openai.replies = [Reply(text="from redis", usage={"input": 5, "output": 2})]
    await post(one, "/v1/messages", MSG)
    await eventually(lambda: True)
    await asyncio.sleep(0.1)   # the Redis write happens after the answer
    status, body, h = await post(two, "/v1/messages", MSG)
    assert cache_headers(h) == ("HIT", "redis")
    assert body["content"][0]["text"] == "from redis" and body["usage"]["output_tokens"] == 2
    assert len(one.openai.requests) == 1   # both gateways share the fake upstream
    # promoted to the second instance's memory
    assert (await post(two, "/v1/messages", MSG))[2]["X-Proxy-Cache-Source"] == "memory"
    h2 = await health(two)
    assert h2["cache"]["redis"]["up"] is True


@pytest.mark.parametrize("stream_follower", [False, True])
async def test_two_instances_share_one_upstream_call(make_gateway: Any, redis_url: str,
                                                     redis_prefix: str,
                                                     stream_follower: bool) -> None:
    cfg = {"cache": {"enabled": True, "redis_url": redis_url}, "redis": {"prefix": redis_prefix}}
    one = await make_gateway(**cfg)
    two = await make_gateway(**cfg)
    one.openai.replies = [Reply(text=LONG, chunk_size=8, delay=0.05)]
    leader = asyncio.create_task(stream(one, "/v1/messages", MSG))
    await eventually(lambda: one.openai.open_streams == 1)
    if stream_follower:
        events, h = await stream(two, "/v1/messages", MSG)
        assert streamed_text(events) == LONG and b"message_stop" in events[-1]
    else:
        status, body, h = await post(two, "/v1/messages", MSG)
        assert status == 200 and body["content"][0]["text"] == LONG
    assert cache_headers(h) == ("HIT", "inflight")
    await leader
    assert len(one.openai.requests) == 1
    assert (await health(two))["cache"]["remote_joins"] == 1
