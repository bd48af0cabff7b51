"""The fakes are faithful: the official SDKs, pointed straight at them, parse what they send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.fixtures import eventually, fake_anthropic, fake_openai, start_fake  # noqa: F401

TOOLS = Reply(
    text="Let me check both.",
    tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris", "fmt": "24h"})],
    usage={"input": 20, "output": 30, "cache_read": 100, "cache_creation": 5},
)
THINKING = Reply(reasoning="The user greets me; answer briefly.", text="Hi there!")
OA_MSGS: Any = [{"role": "user", "content": "hi"}]
AN_ARGS: Any = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}


def an_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)


@pytest.fixture
async def oa(fake_openai: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    # Closed explicitly: an SDK client left to the GC closes itself on a dead loop.
    async with openai.AsyncOpenAI(base_url=fake_openai[1], api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
async def an(fake_anthropic: Any) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with an_client(fake_anthropic[1]) as client:
        yield client


def without_ids(data: Any) -> Any:
    """Drop random ids, `created`, SDK-added indexes and empty values, so that a streamed
    and a plain answer compare equal."""
    if isinstance(data, dict):
        skip = ("id", "created", "index")
        return {k: without_ids(v) for k, v in data.items() if k not in skip and v not in (None, [])}
    if isinstance(data, list):
        return [without_ids(v) for v in data]
    return data


async def raw_events(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[tuple[str | None, bytes]]:
    """(event name, data) pairs of a raw SSE response, parsed strictly."""
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as resp:
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = await resp.read()
    assert raw.endswith(b"\n\n")
    events = []
    for frame in raw[:-2].split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        assert set(lines) <= {b"event", b"data"}
        events.append((lines[b"event"].decode() if b"event" in lines else None, lines[b"data"]))
    return events


# OpenAI ----------------------------------------------------------------------------
@pytest.mark.parametrize("reply", [Reply(text="Hello, world!"), TOOLS, THINKING], ids=["text", "tools", "reasoning"])
async def test_openai_stream_rebuilds_completion(fake_openai: Any, oa: openai.AsyncOpenAI, reply: Reply) -> None:
    fake = fake_openai[0]
    fake.replies += [reply, reply]
    plain = await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS)
    async with oa.chat.completions.stream(
        model="gpt-4o", messages=OA_MSGS, stream_options={"include_usage": True}
    ) as stream:
        streamed = await stream.get_final_completion()
    assert plain._request_id and plain._request_id.startswith("req_")
    msg = plain.choices[0].message
    assert msg.content == (reply.text or None)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []] == reply.tool_calls
    assert plain.choices[0].finish_reason == ("tool_calls" if reply.tool_calls else "stop")
    if reply.reasoning:
        assert msg.model_extra["reasoning_content"] == reply.reasoning
    assert without_ids(streamed.model_dump(exclude={"object"})) == without_ids(plain.model_dump(exclude={"object"}))
    assert fake.last.json["stream"] is True and fake.last.headers["authorization"] == "Bearer x"


async def test_openai_usage_counts_cached_tokens(fake_openai: Any, oa: openai.AsyncOpenAI) -> None:
    fake = fake_openai[0]
    fake.replies.append(TOOLS)
    usage = (await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS)).usage
    assert usage is not None and usage.prompt_tokens == 125 and usage.total_tokens == 155
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 100


async def test_openai_raw_stream_shape(fake_openai: Any) -> None:
    fake, url = fake_openai
    fake.replies += [TOOLS, TOOLS]
    hdrs = {"authorization": "Bearer x"}
    body = {"model": "gpt-4o", "messages": OA_MSGS, "stream": True}
    bare = await raw_events(url + "/chat/completions", body, hdrs)
    assert bare[-1] == (None, b"[DONE]") and all(name is None for name, _ in bare)
    chunks = [orjson.loads(data) for _, data in bare[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)  # no usage unless asked
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("tool_calls") == 1
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert sum("id" in tc for tc in calls) == 2 and sum("name" in tc["function"] for tc in calls) == 2
    assert len(calls) > 6  # arguments arrive in several fragments
    assert sum("role" in c["choices"][0]["delta"] for c in chunks) == 1

    body["stream_options"] = {"include_usage": True}
    chunks = [orjson.loads(data) for _, data in (await raw_events(url + "/chat/completions", body, hdrs))[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 125
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_openai_errors(fake_openai: Any, oa: openai.AsyncOpenAI) -> None:
    fake = fake_openai[0]
    fake.replies.append(Reply(status=429, headers={"retry-after": "3"}))
    with pytest.raises(openai.RateLimitError) as exc:
        await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS)
    assert exc.value.response.headers["retry-after"] == "3" and exc.value.code == "rate_limit_exceeded"
    assert exc.value.request_id and exc.value.request_id.startswith("req_")

    fake.replies.append(Reply(text="partial answer", stream_error={"type": "server_error", "message": "boom"}))
    stream = await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        async for _ in stream:
            pass

    with pytest.raises(openai.BadRequestError, match="stream_options"):
        await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS, stream_options={})


async def test_openai_models_and_responder(fake_openai: Any, oa: openai.AsyncOpenAI) -> None:
    fake = fake_openai[0]
    fake.responder = lambda body: Reply(text=body["messages"][-1]["content"].upper())
    assert [m.id async for m in oa.models.list()] == fake.models
    echo = await oa.chat.completions.create(model="gpt-4o", messages=OA_MSGS)
    assert echo.choices[0].message.content == "HI"
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]


# Anthropic -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="Hello, world!"),
        TOOLS,
        THINKING,
        Reply(text="1, 2", stop_sequence="3"),
        Reply(tool_calls=[("ls", {})]),
    ],
    ids=["text", "tools", "thinking", "stop-sequence", "empty-input-tool"],
)
async def test_anthropic_stream_rebuilds_message(
    fake_anthropic: Any, an: anthropic.AsyncAnthropic, reply: Reply
) -> None:
    fake = fake_anthropic[0]
    fake.replies += [reply, reply]
    plain = await an.messages.create(**AN_ARGS)
    async with an.messages.stream(**AN_ARGS) as stream:
        streamed = await stream.get_final_message()
    assert plain._request_id and plain._request_id.startswith("req_")
    assert [b.input for b in plain.content if b.type == "tool_use"] == [args for _, args in reply.tool_calls]
    assert plain.stop_reason == reply.stop and plain.stop_sequence == reply.stop_sequence
    if reply.reasoning:
        assert plain.content[0].type == "thinking" and plain.content[0].signature == reply.signature
    assert without_ids(streamed.model_dump()) == without_ids(plain.model_dump())
    headers = fake.last.headers
    assert headers["anthropic-version"] and headers["authorization"] == "Bearer x"


async def test_anthropic_raw_stream_shape(fake_anthropic: Any) -> None:
    fake, url = fake_anthropic
    fake.replies.append(Reply(reasoning="hmm", text="ok", tool_calls=TOOLS.tool_calls))
    hdrs = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
    events = await raw_events(url + "/v1/messages", AN_ARGS | {"stream": True}, hdrs)
    data = [orjson.loads(d) for _, d in events]
    assert [name for name, _ in events] == [d["type"] for d in data]
    assert data[0]["message"]["content"] == [] and data[0]["message"]["usage"]["input_tokens"] == 11
    assert data[2]["type"] == "ping" and data[-1]["type"] == "message_stop"
    starts = [d for d in data if d["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2, 3]
    assert [s["content_block"].get("input") for s in starts[2:]] == [{}, {}]
    signatures = [d for d in data if d.get("delta", {}).get("type") == "signature_delta"]
    assert len(signatures) == 1 and data[data.index(signatures[0]) + 1] == {"type": "content_block_stop", "index": 0}
    assert data[-2]["usage"]["output_tokens"] > 1


async def test_anthropic_errors(fake_anthropic: Any, an: anthropic.AsyncAnthropic) -> None:
    fake, url = fake_anthropic
    fake.replies.append(Reply(status=429, headers={"retry-after": "3"}))
    with pytest.raises(anthropic.RateLimitError) as exc:
        await an.messages.create(**AN_ARGS)
    assert exc.value.response.headers["retry-after"] == "3"
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert exc.value.body["request_id"] == exc.value.response.headers["request-id"]

    fake.replies.append(Reply(text="partial", stream_error={"type": "overloaded_error", "message": "Overloaded"}))
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with an.messages.stream(**AN_ARGS) as stream:
            await stream.get_final_message()

    async with aiohttp.ClientSession() as http:
        hdrs = {"x-api-key": "x", "anthropic-version": "2026-10-21"}
        async with http.post(url + "/v1/messages", json=AN_ARGS | {"temperature": 1}, headers=hdrs) as resp:
            assert resp.status == 400 and "temperature" in (await resp.json())["error"]["message"]
        async with http.post(url + "/v1/messages", json=AN_ARGS) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"


async def test_anthropic_count_tokens_and_models(fake_anthropic: Any, an: anthropic.AsyncAnthropic) -> None:
    fake = fake_anthropic[0]
    count = await an.messages.count_tokens(model="claude-sonnet-4-6", messages=AN_ARGS["messages"])
    assert count.input_tokens > 0
    assert [m.id async for m in an.models.list()] == fake.models
    assert not fake.replies and fake.requests[0].path == "/v1/messages/count_tokens"


# Failure modes ---------------------------------------------------------------------
async def test_truncated_stream_breaks_sdk(aiohttp_server: Any) -> None:
    reply = Reply(text="a long answer", break_after=4)
    fake, url = await start_fake(aiohttp_server, FakeAnthropic(reply, reply))
    # The SDK lets its transport's error through (httpx or httpx2, depending on the build).
    with pytest.raises(Exception, match="peer closed connection"):
        async with an_client(url) as client, client.messages.stream(**AN_ARGS) as stream:
            await stream.get_final_message()

    received = b""
    hdrs = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.post(url + "/v1/messages", json=AN_ARGS | {"stream": True}, headers=hdrs) as resp:
                async for piece in resp.content.iter_any():
                    received += piece
    assert received.count(b"\n\n") == 4 and b"message_stop" not in received
    await eventually(lambda: fake.open_streams == 0)


async def test_raw_sse_and_extra_fields(aiohttp_server: Any) -> None:
    raw = b'data: {"broken\n\n'
    fake, url = await start_fake(aiohttp_server, FakeOpenAI(Reply(raw_sse=raw), Reply(extra_fields={"x_new": 1})))
    async with aiohttp.ClientSession(headers={"authorization": "Bearer x"}) as http:
        async with http.post(url + "/chat/completions", json={"model": "m", "messages": OA_MSGS}) as resp:
            assert await resp.read() == raw
        async with http.post(url + "/chat/completions", json={"model": "m", "messages": OA_MSGS}) as resp:
            assert (await resp.json())["x_new"] == 1


@pytest.mark.parametrize("reply", [Reply(hang=True), Reply(text="slow " * 20, delay=0.05)], ids=["hang", "stream"])
async def test_client_disconnect_is_counted(aiohttp_server: Any, reply: Reply) -> None:
    fake, url = await start_fake(aiohttp_server, FakeAnthropic(reply))
    hdrs = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession(headers=hdrs) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), http.post(url + "/v1/messages", json=AN_ARGS | {"stream": True}) as resp:
                await resp.read()
    await eventually(lambda: fake.cancelled == 1 and fake.open_streams == 0)
