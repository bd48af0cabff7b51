"""The one chat pipeline behind both surfaces: decode, route, call upstream, then either
aggregate (non-streaming client) or render events as they come (streaming client).

The status line is committed only once the upstream has answered successfully with its first
event; earlier failures become real HTTP errors via the error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from ..access import admit
from ..aggregate import Aggregator
from ..appkeys import ACCESS, BODY, RECORD, REQUEST_ID, STATE
from ..attempts import start_upstream
from ..canonical import MessageStop
from ..errors import P5ProxyError
from ..eventstream import EventStream
from ..inputs import parse_json, read_body, read_json
from ..record import (REQUEST_ID_HEADER, RequestRecord, note_cache, note_client_left,
                      note_request, note_route, note_usage, tap)
from ..surfaces import Surface
from ..tokens import estimate_from_body_size
from ..upstream import Waited
from .shared_answer import CACHE_HEADER, CACHE_SOURCE_HEADER, open_answer

__all__ = ["read_json", "handle_chat", "SSE_HEADERS", "OVERHEAD_HEADER", "FALLBACK_HEADER"]

log = logging.getLogger("p5proxy.chat")

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no", "Connection": "keep-alive"}


OVERHEAD_HEADER = "X-Gateway-Overhead-Ms"
FALLBACK_HEADER = "X-Proxy-Fallback"   # the fallback model that answered


def _overhead_ms(started: float, waited: Waited, rec: RequestRecord | None) -> str:
    """The gateway's own time so far: wall time minus time spent waiting on the upstream
    (noted on the record too)."""
    ms = (time.perf_counter() - started - waited.seconds) * 1000
    if rec is not None:
        rec.overhead_ms = round(ms, 2)
    return f"{ms:.2f}"


async def handle_chat(request: web.Request, surface: Surface) -> web.StreamResponse:
    started = time.perf_counter()
    state = request.app[STATE]
    rec = request.get(RECORD)   # the request log record (record.py), looked up once
    raw = request.get(BODY)   # read by the middleware
    if raw is None:
        raw = await read_body(request)
    req = surface.decode(parse_json(raw, state.config.server.max_json_depth, surface.splitter),
                         request.headers)
    note_request(rec, req)
    await admit(request, req)   # the client key's model permission and limits (access.py)
    waited = Waited()
    route = note_route(rec, state.router.resolve(req.model))
    try:
        if state.cache is None:   # no response cache: straight upstream
            stream, first, route = await start_upstream(state, req, route, waited)
            status, source = "DISABLED", "live"
        else:
            answer = await open_answer(state, request, req, route, waited, start_upstream)
            stream, first, route = answer.rest, answer.first, answer.route
            status, source = answer.status, answer.source
    finally:
        if rec is not None:
            rec.retries, rec.fallback = waited.retries, waited.fallback is not None
    if waited.fallback:
        note_route(rec, route)   # the provider that answered
    cache_headers = {CACHE_HEADER: status, CACHE_SOURCE_HEADER: source}
    note_cache(rec, status, source)
    passthrough = route.provider.protocol == req.ingress and not req.rewritten
    # input tokens for when the upstream reports none: message_start needs them before any
    # upstream does, and some OpenAI-compatible servers never send usage in a stream
    estimate = estimate_from_body_size(req, len(raw))
    try:
        if not req.stream:
            agg = Aggregator()
            for ev in first:
                agg.feed(ev)
            async for batch in stream:
                for ev in batch:
                    agg.feed(ev)
            final = agg.result()
            note_usage(rec, final.usage)
            if passthrough and final.body is not None and not route.filters:
                # same protocol, untouched: the upstream's answer as it is, every field kept
                body = {**final.body, "model": req.model}
            else:
                body = surface.render_response(final, model=req.model,
                                                 input_estimate=estimate, passthrough=passthrough)
            whole = web.Response(body=orjson.dumps(body), content_type="application/json",
                                 headers=cache_headers)
            _answer_headers(whole, request, surface, rec, started, waited)
            # Sent here rather than by aiohttp after the middleware: the record's bookkeeping
            # (metrics, access line, request log) then runs after the client has its answer.
            try:
                await whole.prepare(request)
                await whole.write_eof()
            except ConnectionError:   # the client left: its business, not an error to log
                note_client_left(rec)
            return whole
        renderer = surface.renderer(model=req.model, include_usage=req.include_usage,
                                    input_estimate=estimate, passthrough=passthrough)
        # notes time to first byte, usage, error events; takes secrets out of error messages
        renderer = tap(rec, renderer, partial(request.app[ACCESS].redact, request=request))
        resp = EventStream(headers={**SSE_HEADERS, **cache_headers})
        _answer_headers(resp, request, surface, rec, started, waited)   # overhead: to 1st byte
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        state.streams.add(task)   # so that a graceful stop can wait for it, then end it
        try:
            await _write_stream(resp, renderer, first, stream, provider=route.provider.name,
                                stopping=lambda: state.stopping)
        finally:
            state.streams.discard(task)
        return resp
    finally:
        await stream.aclose()   # ends the upstream call however this ends


def _answer_headers(resp: web.StreamResponse, request: web.Request, surface: Surface,
                    rec: RequestRecord | None, started: float, waited: Waited) -> None:
    """What both kinds of answer carry: the request id (ours and the protocol's own header,
    which for OpenAI is the same one), the gateway's overhead so far, the fallback that
    answered."""
    headers = resp.headers
    headers[REQUEST_ID_HEADER] = headers[surface.request_id_header] = request[REQUEST_ID]
    headers[OVERHEAD_HEADER] = _overhead_ms(started, waited, rec)
    if waited.fallback:
        headers[FALLBACK_HEADER] = waited.fallback


async def _write_batch(resp: web.StreamResponse, data: bytes, batch: list[Any]) -> bool:
    """Write one rendered batch; True when it ended the message (and the response with it)."""
    if batch and type(batch[-1]) is MessageStop:
        await resp.write_eof(data)
        return True
    await resp.write(data)
    return False


async def _write_stream(resp: web.StreamResponse, renderer: Any, first: list[Any],
                        stream: AsyncIterator[list[Any]], *, provider: str,
                        stopping: Callable[[], bool]) -> None:
    """Render and write batch after batch; any failure now ends the stream with the
    protocol's error event, never a traceback or a fake normal ending."""
    render_batch = getattr(renderer, "render_batch", None)
    if render_batch is None:   # not tapped (no request record)
        render = renderer.render
        render_batch = lambda batch: b"".join([render(ev) for ev in batch])   # noqa: E731
    # The batch with the message's end is written with the response's end: with a fast
    # upstream the whole stream (and the headers, see EventStream) is then one write to the
    # socket, where it was three. The upstream is still read to its end (the cache records it).
    ended = False
    try:
        try:
            ended = await _write_batch(resp, render_batch(first), first)
            async for batch in stream:
                if not ended:   # (nothing follows a message's end: the rest is only read)
                    ended = await _write_batch(resp, render_batch(batch), batch)
            if ended:
                return
        except P5ProxyError as err:
            if ended:   # the client has the whole message already
                log.warning("stream from %s failed after its end: %s", provider, err)
                return
            log.warning("stream from %s failed after the first byte: %s", provider, err)
            await resp.write(renderer.error(err))
        except (ConnectionError, web.HTTPException):
            raise
        except asyncio.CancelledError:
            if stopping():   # the grace period is over: say why the stream ends here
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await resp.write(renderer.error(P5ProxyError(
                            "the gateway is shutting down", status=503,
                            kind="overloaded_error")))
            raise
        except Exception:
            log.exception("internal error while streaming from %s", provider)
            if ended:
                return
            await resp.write(renderer.error(P5ProxyError("internal error in the gateway")))
        await resp.write_eof()
    except ConnectionError:
        # The client left mid-stream: nothing is left to write to, and nothing to report but
        # the record's note (aiohttp would log a traceback for the raised error).
        client_left = getattr(renderer, "client_left", None)
        if client_left is not None:
            client_left()
