"""The upstream HTTP/1.1 client (p5proxy/http1.py) against a raw-socket upstream that answers
each request with scripted bytes: body framings (length, chunked with extensions and trailers,
until close), compression, 1xx heads, keep-alive reuse and its limits, and malformed answers,
all through the running gateway and the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import trustme

from p5proxy.http1 import HIGH_WATER, Pool, target_of
from tests.conftest import start_gateway
from tests.fakes.raw_server import RawServer
from tests.test_resilience import HI, config, oa

ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "scripted answer"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


def _chunk(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


STREAM = b"".join([
    _chunk({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "stre"},
                         "finish_reason": None}]}),
    _chunk({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "delta": {"content": "amed"}, "finish_reason": "stop"}]}),
    b"data: [DONE]\n\n"])


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def length_framed(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    return head(f"HTTP/1.1 {status}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", *extra) + body


def chunked(parts: list[bytes], ctype: str = "application/json") -> bytes:
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    return (head("HTTP/1.1 200 OK", f"Content-Type: {ctype}", "Transfer-Encoding: chunked")
            + framed + b"0\r\nX-Trailer: yes\r\n\r\n")


class Scripted(RawServer):
    """Answers the n-th request with the n-th script: bytes to write, then keep the connection
    (b"...") or close it (a script ending in CLOSE)."""

    CLOSE = object()

    def __init__(self, *scripts: Any) -> None:
        super().__init__()
        self.scripts = list(scripts)
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while self.scripts:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = next(int(line.split(b":")[1]) for line in raw.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            self.requests.append(raw + await reader.readexactly(length))
            script = self.scripts.pop(0)
            parts = script if isinstance(script, tuple) else (script,)
            for part in parts:
                if part is Scripted.CLOSE:
                    await writer.drain()
                    return
                if isinstance(part, float):
                    await writer.drain()
                    await asyncio.sleep(part)
                else:
                    writer.write(part)
            await writer.drain()


@pytest.fixture
async def upstream() -> AsyncIterator[Scripted]:
    fake = Scripted()
    await fake.start()
    yield fake
    await fake.stop()


async def gateway(aiohttp_server: Any, fake: Scripted) -> str:
    cfg = config(f"http://127.0.0.1:{fake.port}/v1", retry={"attempts": 1})
    return await start_gateway(aiohttp_server, cfg)


async def answer(url: str, *, stream: bool = False) -> str:
    async with oa(url) as client:
        if not stream:
            reply = await client.chat.completions.create(model="gpt-4o", messages=HI)
            return reply.choices[0].message.content or ""
        text = []
        async for chunk in await client.chat.completions.create(model="gpt-4o", messages=HI,
                                                                stream=True):
            text.extend(choice.delta.content or "" for choice in chunk.choices)
        return "".join(text)


def raw_deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


@pytest.mark.parametrize("script", [
    length_framed(ANSWER),
    chunked([ANSWER[:10], ANSWER[10:]]),
    head("HTTP/1.1 100 Continue") + length_framed(ANSWER),
    (head("HTTP/1.0 200 OK", "Content-Type: application/json") + ANSWER, Scripted.CLOSE),
    length_framed(gzip.compress(ANSWER), "Content-Encoding: gzip"),
    length_framed(zlib.compress(ANSWER), "Content-Encoding: deflate"),
    length_framed(raw_deflate(ANSWER), "Content-Encoding: deflate"),
    # a head and body that arrive a few bytes at a time
    tuple(length_framed(ANSWER)[i:i + 7] for i in range(0, len(length_framed(ANSWER)), 7)),
], ids=["length", "chunked", "100-continue", "until-close", "gzip", "deflate", "raw-deflate",
        "trickle"])
async def test_answers_in_every_framing_and_encoding(aiohttp_server: Any, upstream: Scripted,
                                                     script: Any) -> None:
    upstream.scripts.append(script)
    url = await gateway(aiohttp_server, upstream)
    assert await answer(url) == "scripted answer"
    head_sent = upstream.requests[0].split(b"\r\n\r\n")[0].decode().lower()
    assert "accept-encoding: gzip, deflate" in head_sent
    assert f"host: 127.0.0.1:{upstream.port}" in head_sent
    assert "user-agent: p5proxy/" in head_sent


async def test_a_chunked_gzip_stream(aiohttp_server: Any, upstream: Scripted) -> None:
    packed = gzip.compress(STREAM)
    framed = chunked([packed[:20], packed[20:]], ctype="text/event-stream")
    upstream.scripts.append(framed.replace(b"Transfer-Encoding", b"Content-Encoding: gzip\r\n"
                                           b"Transfer-Encoding"))
    url = await gateway(aiohttp_server, upstream)
    assert await answer(url, stream=True) == "streamed"


async def test_keep_alive_reuses_one_connection(aiohttp_server: Any, upstream: Scripted) -> None:
    upstream.scripts.extend([length_framed(ANSWER), chunked([ANSWER]), length_framed(ANSWER)])
    url = await gateway(aiohttp_server, upstream)
    for _ in range(3):
        assert await answer(url) == "scripted answer"
    assert upstream.connections == 1


async def test_a_connection_paused_at_the_end_of_an_answer_is_pooled_reading_again(
        upstream: Scripted) -> None:
    """An answer whose last bytes take the unread body past HIGH_WATER pauses reading as it
    completes; its connection must go back to the pool reading again, or the next request on
    it would wait for ever. (The Pool itself: the gateway reads answers too soon for this.)"""
    body = b"x" * (HIGH_WATER + 100_000)
    upstream.scripts.extend([length_framed(body), length_framed(ANSWER)])
    pool = Pool(limit=10, limit_per_host=0)
    target = target_of(f"http://127.0.0.1:{upstream.port}/v1/x")
    try:
        resp = await pool.request(target, "POST", {}, b"{}", 5.0)
        await asyncio.sleep(0.3)   # unread while all of it arrives
        assert await resp.read() == body
        async with asyncio.timeout(5):
            resp = await pool.request(target, "POST", {}, b"{}", 5.0)
            assert await resp.read() == ANSWER
        assert upstream.connections == 1
    finally:
        await pool.close()


async def test_connection_close_and_an_upstream_that_drops_idle_connections(
        aiohttp_server: Any, upstream: Scripted) -> None:
    upstream.scripts.extend([
        length_framed(ANSWER, "Connection: close"),            # not reused
        (length_framed(ANSWER), 0.05, Scripted.CLOSE),         # closed while idle
        length_framed(ANSWER)])
    url = await gateway(aiohttp_server, upstream)
    assert await answer(url) == "scripted answer"
    assert await answer(url) == "scripted answer"
    await asyncio.sleep(0.3)   # the upstream's idle close reaches the gateway
    assert await answer(url) == "scripted answer"
    assert upstream.connections == 3


@pytest.mark.parametrize("script, says", [
    (b"HTTP/2 200 OK\r\n\r\n", "invalid status line"),
    (head("HTTP/1.1 200 OK", "Bad Header") + ANSWER, "invalid header line"),
    (head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6") + ANSWER,
     "invalid Content-Length"),
    (length_framed(ANSWER, "Content-Encoding: br"), "unsupported encoding: br"),
    (length_framed(ANSWER).replace(b"\r\n", b"\n"), "bare LFs"),
    ((length_framed(ANSWER)[:-10], Scripted.CLOSE), "broke the connection"),
    (length_framed(b"not gzip at all", "Content-Encoding: gzip"), "broken compressed body"),
])
async def test_broken_answers_are_a_502_that_says_why(aiohttp_server: Any, upstream: Scripted,
                                                       script: Any, says: str) -> None:
    upstream.scripts.append(script)
    url = await gateway(aiohttp_server, upstream)
    with pytest.raises(openai.APIStatusError) as caught:
        await answer(url)
    assert caught.value.status_code == 502
    assert says in caught.value.message


async def test_an_upstream_error_status_keeps_its_body_and_headers(aiohttp_server: Any,
                                                                    upstream: Scripted) -> None:
    error = orjson.dumps({"error": {"message": "slow down", "type": "rate_limit_error"}})
    upstream.scripts.append(length_framed(error, "Retry-After: 7",
                                          status="429 Too Many Requests"))
    url = await gateway(aiohttp_server, upstream)
    with pytest.raises(openai.RateLimitError) as caught:
        await answer(url)
    assert "slow down" in caught.value.message
    assert caught.value.response.headers["retry-after"] == "7"


class ScriptedTLS(Scripted):
    def __init__(self, context: ssl.SSLContext, *scripts: Any) -> None:
        super().__init__(*scripts)
        self.context = context

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("trusted", [True, False])
async def test_https_upstreams_are_verified(aiohttp_server: Any, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            trusted: bool) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    if trusted:   # the client context is made on the first TLS connection, from the defaults
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    fake = ScriptedTLS(server_context, length_framed(ANSWER))
    await fake.start()
    try:
        cfg = config(f"https://localhost:{fake.port}/v1", retry={"attempts": 1})
        url = await start_gateway(aiohttp_server, cfg)
        if trusted:
            assert await answer(url) == "scripted answer"
            assert b"Host: localhost:%d" % fake.port in fake.requests[0]
        else:
            with pytest.raises(openai.APIStatusError) as caught:
                await answer(url)
            assert caught.value.status_code == 502
            assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
            assert fake.requests == []
    finally:
        await fake.stop()
