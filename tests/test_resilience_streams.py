"""Deadlines, broken streams and cancellation against the fault-injecting upstream: before the
first byte a failure is retried; after it the stream ends with the protocol's error event
(never a made-up normal ending); a client that leaves closes its upstream request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from tests.conftest import start_gateway
from tests.fakes.faulty_upstream import (FaultyUpstream, broken_chunked, ok, reset_after,
                                         stall_after, stall_before_headers, start_faulty,
                                         status, truncated)
from tests.test_resilience import FAST, HI, an, ask, config, oa

LONG = "the quick brown fox jumps over the lazy dog " * 4
CHAT = {"model": "gpt-4o", "messages": HI, "stream": True}
MSG = {"model": "gpt-4o", "max_tokens": 50, "messages": HI, "stream": True}
AN_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "client"}


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    fake = await start_faulty()
    yield fake
    await fake.stop()


async def gateway(aiohttp_server: Any, faulty: FaultyUpstream, **timeouts: float) -> str:
    cfg = config(faulty.base_url)
    cfg["providers"]["fx"]["timeouts"] = timeouts
    cfg["server"] = {"heartbeat_secs": 0.2}
    return await start_gateway(aiohttp_server, cfg)


async def openai_stream(url: str) -> tuple[list[str], float]:
    """Raw OpenAI SSE lines from the gateway, and how long the stream took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200 and resp.headers["X-Accel-Buffering"] == "no"
            text = await resp.text()
    return text.split("\n"), time.monotonic() - started


async def anthropic_stream(url: str) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/messages", json=MSG, headers=AN_HEADERS) as resp:
            assert resp.status == 200 and resp.headers["X-Accel-Buffering"] == "no"
            return (await resp.text()).split("\n")


def openai_error(lines: list[str]) -> dict[str, Any]:
    """The stream ended with an error event and no normal ending."""
    data = [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "error" in data[-1], data[-1]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in data)
    assert "data: [DONE]" not in lines
    error: dict[str, Any] = data[-1]["error"]
    return error


def anthropic_error(lines: list[str]) -> dict[str, Any]:
    events = [line[7:] for line in lines if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error", events
    assert "message_stop" not in events and "message_delta" not in events
    error: dict[str, Any] = orjson.loads(
        next(line[6:] for line in reversed(lines) if line.startswith("data: ")))
    return error


# --- before the first byte: retried ----------------------------------------------------------

async def test_stall_before_the_first_byte_is_retried(aiohttp_server: Any,
                                                      faulty: FaultyUpstream) -> None:
    faulty.faults.append(stall_before_headers())
    url = await gateway(aiohttp_server, faulty, first_byte=0.3)
    assert await ask(url) == "Hello from the faulty upstream"
    assert len(faulty.requests) == 2
    await _eventually(lambda: faulty.closed == 1)   # the stalled request was closed


@pytest.mark.parametrize("fault", [reset_after(0), truncated(0), broken_chunked(b"zz\r\n", 0)],
                         ids=["reset", "truncated", "chunked"])
async def test_broken_answer_before_the_first_event_is_retried(
        aiohttp_server: Any, faulty: FaultyUpstream, fault: Any) -> None:
    faulty.faults.append(fault)
    url = await gateway(aiohttp_server, faulty, idle=1)
    lines, _ = await openai_stream(url)
    assert "data: [DONE]" in lines and len(faulty.requests) == 2


async def test_stall_before_the_first_byte_without_retries_is_504(
        aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults += [stall_before_headers()] * 3
    url = await gateway(aiohttp_server, faulty, first_byte=0.2)
    async with an(url) as client:
        with pytest.raises(anthropic.APIStatusError) as exc:
            await client.messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    assert exc.value.status_code == 504
    assert len(faulty.requests) == FAST["attempts"]


# --- after the first byte: the protocol's error event --------------------------------------------

async def test_reset_mid_stream_ends_with_an_error_event(aiohttp_server: Any,
                                                         faulty: FaultyUpstream) -> None:
    faulty.faults.append(reset_after(3))
    url = await gateway(aiohttp_server, faulty)
    lines, _ = await openai_stream(url)
    assert openai_error(lines)["type"] == "server_error"
    faulty.faults.append(reset_after(3))
    assert anthropic_error(await anthropic_stream(url))["error"]["type"] == "api_error"
    assert len(faulty.requests) == 2   # never retried after the first byte


async def test_sdk_sees_the_mid_stream_failure(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults.append(reset_after(3))
    url = await gateway(aiohttp_server, faulty)
    got = []
    async with oa(url) as client:
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(model="gpt-4o", messages=HI,
                                                          stream=True)
            async for chunk in stream:
                got.append(chunk)
    assert got and not any(c.choices and c.choices[0].finish_reason for c in got)


async def test_stall_mid_stream_ends_within_the_idle_timeout(aiohttp_server: Any,
                                                             faulty: FaultyUpstream) -> None:
    faulty.faults.append(stall_after(3))
    url = await gateway(aiohttp_server, faulty, idle=0.6)
    lines, took = await openai_stream(url)
    assert openai_error(lines)["type"] == "timeout_error" or "sent nothing" in str(lines)
    assert 0.5 < took < 3
    assert lines.count(": keep-alive") >= 1     # heartbeats while it was silent
    await _eventually(lambda: faulty.closed == 1)   # and the upstream request was closed


@pytest.mark.parametrize("junk", [b"zz\r\n", b"zz"], ids=["junk-line", "junk-then-silence"])
async def test_broken_chunked_framing_ends_with_an_error_event(
        aiohttp_server: Any, faulty: FaultyUpstream, junk: bytes) -> None:
    faulty.faults.append(broken_chunked(junk, 3))
    url = await gateway(aiohttp_server, faulty, idle=0.6)
    started = time.monotonic()
    lines = await anthropic_stream(url)
    anthropic_error(lines)
    assert time.monotonic() - started < 3   # our own deadline around the read held


async def test_truncated_stream_ends_with_an_error_event(aiohttp_server: Any,
                                                         faulty: FaultyUpstream) -> None:
    faulty.faults.append(truncated(3))
    url = await gateway(aiohttp_server, faulty)
    lines, _ = await openai_stream(url)
    openai_error(lines)
    faulty.faults.append(truncated(3))
    anthropic_error(await anthropic_stream(url))


async def test_total_timeout_cuts_a_long_stream(aiohttp_server: Any,
                                                faulty: FaultyUpstream) -> None:
    faulty.faults.append(ok(LONG, delay=0.1))
    url = await gateway(aiohttp_server, faulty, total=0.6)
    lines, took = await openai_stream(url)
    assert "total time limit" in openai_error(lines)["message"] and took < 3


async def test_a_slow_healthy_stream_is_not_cut(aiohttp_server: Any,
                                                faulty: FaultyUpstream) -> None:
    """Idle 0.5 s and events every 0.3 s for about 3 s: no total, so nothing cuts it."""
    faulty.faults.append(ok("0123456789" * 5, delay=0.3))
    url = await gateway(aiohttp_server, faulty, idle=0.5)
    lines, took = await openai_stream(url)
    assert "data: [DONE]" in lines and took > 2.5
    text = "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in lines if line.startswith("data: {")
                   and orjson.loads(line[6:])["choices"])
    assert text == "0123456789" * 5


async def test_keepalives_on_both_protocols(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults.append(ok("slow", delay=0.5))
    url = await gateway(aiohttp_server, faulty)
    lines, _ = await openai_stream(url)
    assert lines.count(": keep-alive") >= 2 and "data: [DONE]" in lines
    faulty.faults.append(ok("slow", delay=0.5))
    lines = await anthropic_stream(url)
    events = [line[7:] for line in lines if line.startswith("event: ")]
    assert events.count("ping") >= 2 and events[-1] == "message_stop"


# --- cancellation ------------------------------------------------------------------------------

async def test_client_leaving_before_the_first_token_closes_the_upstream(
        aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults.append(stall_before_headers())
    url = await gateway(aiohttp_server, faulty)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(url + "/v1/chat/completions", json=CHAT,
                                    timeout=aiohttp.ClientTimeout(total=0.5)):
                pass
    left = time.monotonic()
    await _eventually(lambda: faulty.closed == 1)
    assert faulty.closed_at[0] - left < 1.0
    assert len(faulty.requests) == 1   # and it was not retried for nobody


async def test_client_leaving_mid_stream_closes_the_upstream(aiohttp_server: Any,
                                                             faulty: FaultyUpstream) -> None:
    faulty.faults.append(ok(LONG * 4, delay=0.05))
    url = await gateway(aiohttp_server, faulty)
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/messages", json=MSG, headers=AN_HEADERS) as resp:
            assert resp.status == 200
            await resp.content.readany()
    left = time.monotonic()
    await _eventually(lambda: faulty.closed == 1)
    assert faulty.closed_at[0] - left < 1.0


async def test_a_request_waiting_for_a_pool_slot_is_not_sent_after_its_client_left(
        aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    cfg = config(faulty.base_url)
    cfg["server"] = {"pool_limit": 1}
    url = await start_gateway(aiohttp_server, cfg)
    faulty.faults.append(stall_after(2))
    async with aiohttp.ClientSession() as first:
        async with first.post(url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200   # holds the only upstream connection
            await resp.content.readany()
            async with aiohttp.ClientSession() as second:
                with pytest.raises(asyncio.TimeoutError):   # queued for the slot, then gone
                    async with second.post(url + "/v1/chat/completions", json=CHAT,
                                           timeout=aiohttp.ClientTimeout(total=0.5)):
                        pass
    await _eventually(lambda: faulty.closed == 1)   # the first client left too: slot free
    await asyncio.sleep(0.3)
    assert len(faulty.requests) == 1   # the second request never reached the upstream
    assert await ask(url) == "Hello from the faulty upstream"   # the slot was given back


async def _eventually(condition: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_client_leaving_during_a_backoff_stops_the_retries(
        aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults += [status(503, "1.5")]
    cfg = config(faulty.base_url, retry={**FAST, "backoff_max": 5})
    url = await start_gateway(aiohttp_server, cfg)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(url + "/v1/chat/completions", json=CHAT,
                                    timeout=aiohttp.ClientTimeout(total=0.5)):
                pass
    await asyncio.sleep(2)   # past the Retry-After the gateway was waiting for
    assert len(faulty.requests) == 1
