"""Input limits: body size (413), JSON nesting (400, also past orjson's own limit), and slow
clients: a dribbled body gets 408 and a closed connection, dribbled headers a closed connection
(the real `p5proxy serve`), instead of holding a handler forever."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from p5proxy.inputs import too_deep

from tests.conftest import Gateway
from tests.processes import free_port

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
AN = {"anthropic-version": "2023-06-01", "x-api-key": "k", "content-type": "application/json"}
OA = {"Authorization": "Bearer k", "content-type": "application/json"}


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def depth(value: Any) -> int:
    """The reference: arrays and objects counted by walking them."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=st.integers(1, 120).flatmap(lambda d: st.tuples(st.just(d), json_values)),
       limit=st.integers(2, 250))
def test_depth_check_agrees_with_a_walk(value: tuple[int, Any], limit: int) -> None:
    """too_deep leans on orjson's encoder limit: it must say what a walk says."""
    extra, inner = value
    nested_value: Any = inner
    for i in range(extra):   # push the structure down to reach interesting depths
        nested_value = [nested_value] if i % 2 else {"k": nested_value}
    assert too_deep(nested_value, limit) == (depth(nested_value) > limit)


async def post_raw(url: str, data: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())


async def test_nesting_deeper_than_the_limit_is_400_naming_the_body(gateway: Gateway) -> None:
    ok_depth = 64 - 2   # the body and `x_extra` are two levels
    status, body = await post_raw(gateway.url + "/v1/messages",
                                  orjson.dumps({**MSG, "x_extra": nested(ok_depth)}), AN)
    assert status == 200, body
    for depth in (64, 300, 1030, 5000):   # 1030 and 5000 are past orjson's own 1024 levels
        deep = {**MSG, "x_extra": nested(depth)}
        raw = orjson.dumps(deep) if depth < 250 else (
            b'{"model":"gpt-4o","messages":[],"x":' + b"[" * depth + b"]" * depth + b"}")
        status, body = await post_raw(gateway.url + "/v1/messages", raw, AN)
        assert status == 400, (depth, body)
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"].startswith("body: JSON nested deeper than")
        assert "server.max_json_depth" in body["error"]["message"]
        status, body = await post_raw(gateway.url + "/v1/chat/completions", raw, OA)
        assert status == 400 and body["error"]["param"] == "body", (depth, body)
    # deep tool schemas are where it would hurt: encoding upstream stops at 255 levels
    tools = [{"type": "function", "function": {"name": "f", "parameters": nested(100)}}]
    status, body = await post_raw(gateway.url + "/v1/chat/completions",
                                  orjson.dumps({**CHAT, "tools": tools}), OA)
    assert status == 400 and body["error"]["param"] == "body"
    assert len(gateway.openai.requests) == 1   # only the first request went upstream


async def test_depth_limit_is_configurable(make_gateway: Any) -> None:
    gw = await make_gateway(server={"max_json_depth": 8})
    status, body = await post_raw(gw.url + "/v1/messages",
                                  orjson.dumps({**MSG, "x_extra": nested(8)}), AN)
    assert status == 400 and "deeper than 8 levels" in body["error"]["message"]
    status, body = await post_raw(gw.url + "/v1/messages",
                                  orjson.dumps({**MSG, "x_extra": nested(7)}), AN)
    assert status == 200, body


async def test_chunked_body_over_the_size_limit_is_413(make_gateway: Any) -> None:
    gw = await make_gateway(server={"max_body_bytes": 4096})

    async def chunks() -> Any:   # no Content-Length: the limit is found while reading
        yield b'{"model":"gpt-4o","messages":[{"role":"user","content":"'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    for path, headers, kind in (("/v1/messages", AN, "request_too_large"),
                                ("/v1/chat/completions", OA, "invalid_request_error")):
        status, body = await post_raw(gw.url + path, chunks(), headers)
        assert status == 413 and body["error"]["type"] == kind
        assert "server.max_body_bytes" in body["error"]["message"]


async def _dribble(port: int, head: bytes, body: bytes, *, every: float,
                   limit: float) -> tuple[bytes, float]:
    """Send `head` at once, then `body` a byte at a time; return what the server answered
    and when the connection ended (seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = b""
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(limit):
            for byte in body:
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), every)
                except TimeoutError:
                    continue
                answer += chunk
                if not chunk:
                    break
            answer += await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return answer, time.monotonic() - started


async def test_a_client_dribbling_its_body_gets_408_and_is_disconnected(make_gateway: Any) -> None:
    gw = await make_gateway(server={"client_read_timeout": 1.0})
    port = int(gw.url.rsplit(":", 1)[1])
    body = orjson.dumps({**MSG, "messages": [{"role": "user", "content": "x" * 200}]})
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nanthropic-version: 2023-06-01\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
    answer, took = await _dribble(port, head, body, every=0.1, limit=15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"timeout_error" in answer and b"server.client_read_timeout" in answer
    assert took < 10   # cut after about a second, not after the ~20 s the dribble would take
    assert gw.openai.requests == []


async def test_a_client_dribbling_its_headers_is_disconnected(tmp_path: Path,
                                                             fake_openai: Any) -> None:
    _, upstream = fake_openai
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "server": {"client_read_timeout": 1.0},
        "providers": {"oa": {"type": "openai", "base_url": upstream, "api_key": "k"}},
        "models": {"gpt-4o": {"provider": "oa"}}}))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p5proxy", "serve",
        "--config", str(cfg), "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("gateway did not start")
        head = b"POST /v1/chat/completions HTTP/1.1\r\n"
        headers = b"".join(b"x-filler-%d: %s\r\n" % (i, b"y" * 10) for i in range(200))
        answer, took = await _dribble(port, head, headers, every=0.1, limit=20)
        assert took < 10, took    # the 200 header lines would take over 20 s
        assert not answer.startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_bug_in_a_route_still_answers_in_protocol_shape(make_gateway: Any,
                                                               tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The safety net behind the decoders: an unexpected exception is a logged 500 in the
    caller's shape, not aiohttp's text page."""
    (tmp_path / "broken_route.py").write_text(
        "from p5proxy import hookimpl\n"
        "async def boom(request):\n"
        "    raise RuntimeError('kaputt')\n"
        "@hookimpl\n"
        "def p5proxy_register_routes(app, config):\n"
        "    app.router.add_post('/v1/messages/boom', boom)\n"
        "    app.router.add_post('/v1/chat/boom', boom)\n")
    gw = await make_gateway(plugins_dir=str(tmp_path))
    status, body = await post_raw(gw.url + "/v1/messages/boom", b"{}", AN)
    assert status == 500 and body["type"] == "error" and body["error"]["type"] == "api_error"
    status, body = await post_raw(gw.url + "/v1/chat/boom", b"{}", OA)
    assert status == 500 and body["error"]["type"] == "server_error"
    assert "kaputt" not in str(body)   # details go to the log only
    assert any("kaputt" in (r.exc_text or "") or "internal error" in r.getMessage()
               for r in caplog.records)
