"""Mock LLM upstream for the benchmark: fast enough never to be the bottleneck.

A raw asyncio.Protocol server on uvloop with hand-written HTTP/1.1 keep-alive parsing and
responses serialised once at startup. It serves

- ``POST .../chat/completions``: OpenAI chat completion, JSON or SSE;
- ``POST .../messages``: Anthropic message, JSON or SSE (with ``event:`` lines);
- ``GET /stats``: ``{"requests", "streams_open", "streams_started", "streams_completed",
  "streams_aborted", "connections_open"}`` as JSON;
- ``GET /health``.

A request streams when its body contains ``"stream": true``; an OpenAI stream ends with a usage
chunk when the body has ``"include_usage": true``. Streams use chunked transfer-encoding, one
HTTP chunk per SSE event; with ``--delay-ms`` the content chunks are spaced by timers (no
coroutine per stream). ``streams_open`` counts streams whose last byte has not been written
and whose connection is still up: a proxy that leaves an upstream stream running after its
client left shows up there.

    python bench/mock_upstream.py --port 18200 --chunks 20 --delay-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench needs uvloop, but stay runnable
    uvloop = None

TRUE_RE = re.compile(rb'\s*:\s*true')


def _flag(body: bytes, key: bytes) -> bool:
    """True when `"key": true` occurs in the body; bytes.find keeps a 120 KB body cheap to scan."""
    i = body.find(key)
    while i >= 0:
        if TRUE_RE.match(body, i + len(key)):
            return True
        i = body.find(key, i + 1)
    return False

MAX_HEADER = 64 * 1024
CREATED = 1700000000
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _http(status: str, ctype: bytes, body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
SSE_END = b"0\r\n\r\n"


class Stream:
    """A pre-serialised SSE response: head, content events spaced by the delay, tail."""

    def __init__(self, head: list[bytes], body: list[bytes], tail: list[bytes]) -> None:
        self.head = SSE_HEAD + b"".join(_chunk(e) for e in head)
        self.body = [_chunk(e) for e in body]
        self.tail = b"".join(_chunk(e) for e in tail) + SSE_END
        self.whole = self.head + b"".join(self.body) + self.tail


def _openai(chunks: int) -> tuple[bytes, Stream, Stream]:
    words = [WORDS[i % len(WORDS)] + " " for i in range(chunks)]
    usage = {"prompt_tokens": 42, "completion_tokens": chunks, "total_tokens": 42 + chunks}
    base = {"id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": "gpt-bench"}
    full = dict(base, choices=[{
        "index": 0, "message": {"role": "assistant", "content": "".join(words)},
        "logprobs": None, "finish_reason": "stop"}], usage=usage)
    json_resp = _http("200 OK", b"application/json", _dumps(full))

    def stream(include_usage: bool) -> Stream:
        cb = dict(base, object="chat.completion.chunk")
        extra = {"usage": None} if include_usage else {}

        def ev(delta: dict, finish: str | None) -> bytes:
            obj = dict(cb, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra)
            return b"data: " + _dumps(obj) + b"\n\n"

        head = [ev({"role": "assistant", "content": ""}, None)]
        body = [ev({"content": w}, None) for w in words]
        tail = [ev({}, "stop")]
        if include_usage:
            tail.append(b"data: " + _dumps(dict(cb, choices=[], usage=usage)) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        return Stream(head, body, tail)

    return json_resp, stream(False), stream(True)


def _anthropic(chunks: int) -> tuple[bytes, Stream]:
    words = [WORDS[i % len(WORDS)] + " " for i in range(chunks)]
    msg = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
           "content": [{"type": "text", "text": "".join(words)}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 42, "output_tokens": chunks}}
    json_resp = _http("200 OK", b"application/json", _dumps(msg))

    def ev(name: str, obj: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"

    start = dict(msg, content=[], stop_reason=None, usage={"input_tokens": 42, "output_tokens": 1})
    head = [
        ev("message_start", {"type": "message_start", "message": start}),
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
        ev("ping", {"type": "ping"}),
    ]
    body = [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": w}}) for w in words]
    tail = [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev("message_delta", {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": chunks}}),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return json_resp, Stream(head, body, tail)


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams_open = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        self.connections_open = 0

    def as_json(self) -> bytes:
        return _dumps(vars(self))


class Server:
    """Shared state: the pre-serialised responses, the delay and the counters."""

    def __init__(self, *, chunks: int, delay: float) -> None:
        self.delay = delay
        self.stats = Stats()
        self.oa_json, self.oa_stream, self.oa_stream_usage = _openai(chunks)
        self.an_json, self.an_stream = _anthropic(chunks)
        self.not_found = _http("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')


class MockProtocol(asyncio.Protocol):
    __slots__ = ("srv", "loop", "transport", "buf", "need", "head", "streaming", "timer", "closed",
                 "_body_at", "_keep_alive")

    def __init__(self, srv: Server, loop: asyncio.AbstractEventLoop) -> None:
        self.srv = srv
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # total bytes (head + body) of the request being read, -1: head not parsed
        self.head: tuple[bytes, bytes, bool, bool] | None = None
        self.streaming: tuple[Stream, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._body_at = 0
        self._keep_alive = True

    # -- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.srv.stats.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.srv.stats.connections_open -= 1
        if self.streaming is not None:
            self.streaming = None
            self.srv.stats.streams_open -= 1
            self.srv.stats.streams_aborted += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- parsing ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.streaming is None:
            self._process()

    def _process(self) -> None:
        while not self.closed and self.streaming is None:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEADER:
                        self._fail()
                    return
                if not self._parse_head(end):
                    return
            if self.head is not None and self.head[3]:  # chunked request body
                body = self._dechunk()
                if body is None:
                    return
            else:
                if len(self.buf) < self.need:
                    return
                body = bytes(self.buf[self._body_at:self.need])
                del self.buf[:self.need]
            method, path, keep_alive, _ = self.head  # type: ignore[misc]
            self.need = -1
            self.head = None
            self._respond(method, path, body, keep_alive)

    def _parse_head(self, end: int) -> bool:
        lines = bytes(self.buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail()
            return False
        method, path, version = parts
        length = 0
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                keep_alive = v == b"keep-alive" or (keep_alive and v != b"close")
        self._body_at = end + 4
        self.need = end + 4 + length
        self.head = (method, path.split(b"?", 1)[0], keep_alive, chunked)
        return True

    def _dechunk(self) -> bytes | None:
        """Decode a chunked request body once it is complete in the buffer (rare: small cost)."""
        pos = self._body_at
        out = bytearray()
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", eol)
                if trailer_end < 0:
                    return None
                del self.buf[:trailer_end + 4]
                return bytes(out)
            if len(self.buf) < eol + 2 + size + 2:
                return None
            out += self.buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2

    def _fail(self) -> None:
        assert self.transport is not None
        self.transport.write(_http("400 Bad Request", b"text/plain", b"bad request"))
        self.transport.close()
        self.closed = True

    # -- responses --------------------------------------------------------------------------
    def _respond(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        srv = self.srv
        t = self.transport
        assert t is not None
        if method == b"POST" and path.endswith(b"/chat/completions"):
            srv.stats.requests += 1
            if _flag(body, b'"stream"'):
                self._stream(srv.oa_stream_usage if _flag(body, b'"include_usage"') else srv.oa_stream, keep_alive)
                return
            t.write(srv.oa_json)
        elif method == b"POST" and path.endswith(b"/messages"):
            srv.stats.requests += 1
            if _flag(body, b'"stream"'):
                self._stream(srv.an_stream, keep_alive)
                return
            t.write(srv.an_json)
        elif method == b"GET" and path == b"/stats":
            t.write(_http("200 OK", b"application/json", srv.stats.as_json()))
        elif method in (b"GET", b"HEAD") and path == b"/health":
            t.write(_http("200 OK", b"application/json", b'{"status":"ok"}'))
        else:
            t.write(srv.not_found)
        if not keep_alive:
            t.close()
            self.closed = True

    def _stream(self, stream: Stream, keep_alive: bool) -> None:
        t = self.transport
        assert t is not None
        st = self.srv.stats
        st.streams_started += 1
        if self.srv.delay <= 0:
            t.write(stream.whole)
            st.streams_completed += 1
            if not keep_alive:
                t.close()
                self.closed = True
            return
        st.streams_open += 1
        self._keep_alive = keep_alive
        self.streaming = (stream, 0)
        t.write(stream.head)
        self.timer = self.loop.call_later(self.srv.delay, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.streaming is None or self.closed:
            return
        stream, i = self.streaming
        t = self.transport
        assert t is not None
        t.write(stream.body[i])
        i += 1
        if i < len(stream.body):
            self.streaming = (stream, i)
            self.timer = self.loop.call_later(self.srv.delay, self._tick)
            return
        t.write(stream.tail)
        self.streaming = None
        st = self.srv.stats
        st.streams_open -= 1
        st.streams_completed += 1
        if not self._keep_alive:
            t.close()
            self.closed = True
        elif self.buf:
            self._process()


async def serve(*, host: str, port: int, chunks: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    srv = Server(chunks=chunks, delay=delay)
    server = await loop.create_server(lambda: MockProtocol(srv, loop), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream on http://{host}:{port} chunks={chunks} delay={delay * 1000:g}ms", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18200)
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay before each content chunk")
    a = p.parse_args()
    coro = serve(host=a.host, port=a.port, chunks=a.chunks, delay=a.delay_ms / 1000)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
