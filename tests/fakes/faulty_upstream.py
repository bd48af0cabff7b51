"""A fault-injecting OpenAI Chat Completions upstream on a raw socket.

aiohttp's server cannot send what broken upstreams send, so this one writes HTTP by hand:
each request takes the next `Fault` from a FIFO (`ok()` when empty) and answers with a normal
stream or JSON, an error status with `Retry-After`, a reset or truncation mid-stream, a stall
before the headers or between events, or broken chunked framing. It records every request
(headers included: which upstream key was used) and counts clients that closed the connection
while it was stalling or streaming (`closed`), with the time each close was seen.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .raw_server import RawServer

__all__ = ["FaultyUpstream", "Fault", "ok", "status", "reset_after", "stall_before_headers",
           "stall_after", "broken_chunked", "truncated", "start_faulty"]


@dataclass
class Fault:
    kind: str   # ok | status | reset | stall_headers | stall | chunked | truncated
    text: str = "Hello from the faulty upstream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    events: int = 0                # events sent before the fault (reset, stall, truncated)
    junk: bytes = b""              # broken chunked framing: what comes instead of a chunk size
    delay: float = 0.0             # between events, for `ok`
    key: str | None = None         # only answer this way to this upstream key (else: ok)


def ok(text: str = "Hello from the faulty upstream", *, delay: float = 0.0) -> Fault:
    return Fault("ok", text, delay=delay)


def status(code: int, retry_after: str | None = None, *, key: str | None = None,
           message: str | None = None) -> Fault:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Fault("status", message or f"faulty upstream says {code}", status=code,
                 headers=headers, key=key)


def reset_after(events: int) -> Fault:
    return Fault("reset", events=events)


def stall_before_headers() -> Fault:
    return Fault("stall_headers")


def stall_after(events: int) -> Fault:
    return Fault("stall", events=events)


def broken_chunked(junk: bytes, events: int = 2) -> Fault:
    return Fault("chunked", events=events, junk=junk)


def truncated(events: int) -> Fault:
    return Fault("truncated", events=events)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]    # lower-case names
    json: Any
    at: float

    @property
    def key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _events(text: str, model: str) -> list[bytes]:
    base = {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1,
            "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": text[i:i + 5]}) for i in range(0, len(text), 5)]
    out.append(chunk({}, "stop"))
    out.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": {
        "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}) + b"\n\n")
    return out + [b"data: [DONE]\n\n"]


def _completion(text: str, model: str) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-faulty", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})


class FaultyUpstream(RawServer):
    def __init__(self, *faults: Fault) -> None:
        super().__init__()
        self.faults: list[Fault] = list(faults)
        self.requests: list[Seen] = []
        self.closed = 0                    # clients that left while we stalled or streamed
        self.closed_at: list[float] = []
        self.connections = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _next(self, key: str) -> Fault:
        for i, fault in enumerate(self.faults):
            if fault.key is None or fault.key == key:
                return self.faults.pop(i)
        return ok()

    # --- connection handling ---------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:   # keep-alive: one request after another until a fault closes
            seen = await self._read_request(reader)
            if seen is None:
                return
            self.requests.append(seen)
            if not await self._answer(seen, reader, writer):
                return
            if seen.headers.get("connection", "").lower() == "close":
                return

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x16":   # a TLS handshake: this fake speaks plain HTTP only
                return None
            head = first + await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Seen(path, headers, orjson.loads(body) if body else None, time.monotonic())

    async def _wait_close(self, reader: asyncio.StreamReader) -> None:
        """Stall until the client closes the connection, and count it."""
        while await reader.read(1024):
            pass
        self.closed += 1
        self.closed_at.append(time.monotonic())

    async def _answer(self, seen: Seen, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        fault = self._next(seen.key)
        body = seen.json or {}
        model = str(body.get("model", "m"))
        stream = bool(body.get("stream"))
        if fault.kind == "stall_headers":
            await self._wait_close(reader)
            return False
        if fault.kind == "status":
            payload = orjson.dumps({"error": {"message": fault.text,
                                              "type": "server_error", "code": None}})
            extra = "".join(f"{k}: {v}\r\n" for k, v in fault.headers.items())
            writer.write(f"HTTP/1.1 {fault.status} Fault\r\ncontent-type: application/json\r\n"
                         f"content-length: {len(payload)}\r\n{extra}\r\n".encode() + payload)
            await writer.drain()
            return True
        if not stream and fault.kind == "ok":
            payload = _completion(fault.text, model)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            await writer.drain()
            return True
        events = _events(fault.text, model)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n")
        if fault.kind == "ok":
            try:
                for n, event in enumerate(events):
                    if n and fault.delay:
                        await asyncio.sleep(fault.delay)
                    writer.write(_chunk(event))
                    await writer.drain()
            except ConnectionError:
                self.closed += 1
                self.closed_at.append(time.monotonic())
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        for event in events[:fault.events]:
            writer.write(_chunk(event))
        await writer.drain()
        if fault.events:   # the events reach the client before the fault does
            await asyncio.sleep(0.2)
        if fault.kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif fault.kind == "stall":
            await self._wait_close(reader)
        elif fault.kind == "chunked":
            writer.write(fault.junk)   # where the next chunk-size line should be
            await writer.drain()
            await self._wait_close(reader)
        elif fault.kind == "truncated":   # the body ends without its last chunk
            await writer.drain()
        return False


async def start_faulty(*faults: Fault) -> FaultyUpstream:
    fake = FaultyUpstream(*faults)
    await fake.start()
    return fake
