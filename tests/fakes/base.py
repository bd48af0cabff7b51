"""Machinery shared by the fake upstreams: recording, reply queue, SSE writing."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .replies import Reply, new_id

__all__ = ["FakeUpstream", "RecordedRequest", "Responder", "sse"]

REQUEST_ID = web.RequestKey("request_id", str)
Responder = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    json: Any  # None when the body is empty or not JSON
    body: bytes


class FakeUpstream:
    """Base class: subclasses add routes and render replies in their protocol."""

    default_text = "Hello from fake-upstream"
    id_header = "x-request-id"
    id_prefix = "req_"
    static_headers: dict[str, str] = {}

    def __init__(self, *replies: Reply, responder: Responder | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.replies: list[Reply] = list(replies)  # FIFO
        self.responder = responder
        self.open_streams = 0  # streams being written right now
        self.cancelled = 0  # requests whose client left before the end

    def app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._add_headers)
        self.routes(app)
        return app

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # Subclass hooks ---------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    # Shared flow ------------------------------------------------------------------
    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        # Signal, not middleware: stream headers go out at prepare(), before a handler returns.
        for key, value in {self.id_header: request_id(request), **self.static_headers}.items():
            response.headers.setdefault(key, value)

    async def record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=parsed,
            body=body,
        )
        self.requests.append(rec)
        request[REQUEST_ID] = new_id(self.id_prefix)
        return rec

    async def next_reply(self, body: dict[str, Any]) -> Reply:
        if self.responder is not None:
            reply = self.responder(body)
            return await reply if inspect.isawaitable(reply) else reply
        if self.replies:
            return self.replies.pop(0)
        return Reply(text=self.default_text)

    @staticmethod
    def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = {"content-type": "application/json"} | (headers or {})
        return web.Response(body=orjson.dumps(data), status=status, headers=hdrs)

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.json_response(self.error_body(status, message, request_id(request)), status=status)

    def reply_error(self, request: web.Request, reply: Reply) -> web.Response:
        body = reply.error
        if body is None:
            body = self.error_body(reply.status, "Fake upstream error", request_id(request))
        return self.json_response(body, status=reply.status, headers=reply.headers)

    async def hang(self) -> None:
        """Accept the request and never answer; a disconnect cancels the handler."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def stream(self, request: web.Request, reply: Reply, events: list[bytes]) -> web.StreamResponse:
        """Write one event per write (flushed), honouring delay, break_after and disconnects."""
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        resp = web.StreamResponse(headers=headers | reply.headers)
        await resp.prepare(request)
        self.open_streams += 1
        try:
            for n, event in enumerate(events):
                if n == reply.break_after:
                    # No terminator and no final HTTP chunk: the client sees a cut body.
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                if n and reply.delay:
                    await asyncio.sleep(reply.delay)
                await resp.write(event)
            await resp.write_eof()
        except ConnectionResetError:
            self.cancelled += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.open_streams -= 1
        return resp

    async def answer(
        self,
        request: web.Request,
        rec: RecordedRequest,
        *,
        render: Callable[[Reply, dict[str, Any]], dict[str, Any]],
        render_stream: Callable[[Reply, dict[str, Any]], list[bytes]],
    ) -> web.StreamResponse:
        """Pick the reply for a validated generation request and send it."""
        reply = await self.next_reply(rec.json)
        if reply.hang:
            await self.hang()
        if reply.is_error:
            return self.reply_error(request, reply)
        if reply.raw_sse is not None:
            raw = reply.raw_sse
            return await self.stream(request, reply, [raw] if isinstance(raw, bytes) else list(raw))
        if rec.json.get("stream"):
            return await self.stream(request, reply, render_stream(reply, rec.json))
        return self.json_response(render(reply, rec.json), headers=reply.headers)


def request_id(request: web.Request) -> str:
    return request.get(REQUEST_ID) or "req_unrecorded"


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame with compact one-line JSON data."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"
