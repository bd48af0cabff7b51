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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from ..access import admit
from ..aggregate import Aggregator
from ..appkeys import REQUEST_ID, STATE
from ..canonical import ChatRequest, ErrorEvent
from ..errors import P5ProxyError, UpstreamError
from ..filters import apply_filters
from ..inputs import read_json
from ..provider import Route
from ..record import note_cache, note_request, note_route, note_usage, tap
from ..surfaces import Surface
from ..tokens import estimate_from_body_size, estimate_input_tokens
from ..upstream import Waited
from .shared_answer import CACHE_HEADER, CACHE_SOURCE_HEADER, open_answer

__all__ = ["read_json", "handle_chat", "SSE_HEADERS", "OVERHEAD_HEADER"]

log = logging.getLogger("p5proxy.chat")

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no", "Connection": "keep-alive"}


OVERHEAD_HEADER = "X-Gateway-Overhead-Ms"


def _overhead_ms(started: float, waited: Waited) -> str:
    """The gateway's own time so far: wall time minus time spent waiting on the upstream."""
    return f"{(time.perf_counter() - started - waited.seconds) * 1000:.2f}"


async def handle_chat(request: web.Request, surface: Surface) -> web.StreamResponse:
    started = time.perf_counter()
    state = request.app[STATE]
    req = surface.decode(await read_json(request), request.headers)
    note_request(request, req)   # the request log record (record.py)
    await admit(request, req)   # the client key's model permission and limits (access.py)
    waited = Waited()
    route = note_route(request, state.router.resolve(req.model))
    answer = await open_answer(state, request, req, route, waited, _start)
    batches, first, route = answer.rest, answer.first, answer.route
    cache_headers = {CACHE_HEADER: answer.status, CACHE_SOURCE_HEADER: answer.source}
    note_cache(request, answer.status, answer.source)
    passthrough = route.provider.protocol == req.ingress and not req.rewritten
    # input tokens for when the upstream reports none: message_start needs them before any
    # upstream does, and some OpenAI-compatible servers never send usage in a stream
    size = request.content_length
    if size:
        estimate = estimate_from_body_size(req, size)
    else:
        estimate = 0 if passthrough else estimate_input_tokens(req)
    async with contextlib.aclosing(batches) as stream:
        if not req.stream:
            agg = Aggregator()
            for ev in first:
                agg.feed(ev)
            async for batch in stream:
                for ev in batch:
                    agg.feed(ev)
            final = agg.result()
            note_usage(request, final.usage)
            if passthrough and final.body is not None and not route.filters:
                # same protocol, untouched: the upstream's answer as it is, every field kept
                body = {**final.body, "model": req.model}
            else:
                body = surface.render_response(final, model=req.model,
                                                 input_estimate=estimate, passthrough=passthrough)
            return web.Response(body=orjson.dumps(body), content_type="application/json",
                                headers={OVERHEAD_HEADER: _overhead_ms(started, waited),
                                         **cache_headers})
        renderer = surface.renderer(model=req.model, include_usage=req.include_usage,
                                    input_estimate=estimate, passthrough=passthrough)
        renderer = tap(request, renderer)   # notes time to first byte, usage, error events
        resp = web.StreamResponse(headers={**SSE_HEADERS, **cache_headers})
        resp.headers[surface.request_id_header] = request[REQUEST_ID]
        resp.headers[OVERHEAD_HEADER] = _overhead_ms(started, waited)   # up to the first byte
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


async def _start(state: Any, req: ChatRequest, route: Route,
                 waited: Waited) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    """Send the request upstream and wait for its first batch of events. Upstream failures up to
    here raise (the client gets a real HTTP error); a route with `tools: auto` whose upstream
    rejects native tools is retried once with tool emulation."""
    while True:
        runs = [f.open(req, route) for f in route.filters]
        ureq = route.provider.build_request(req, route)
        batches = state.upstream.events(route.provider, ureq, route.provider.config.timeouts,
                                        waited)
        if runs:
            batches = apply_filters(batches, runs)
        try:
            first: list[Any] = await anext(batches, [])
            if first and isinstance(first[0], ErrorEvent):
                raise first[0].error
            return batches, first, route
        except UpstreamError as err:
            await batches.aclose()
            fallback = state.router.tools_fallback(req.model, route, err) if req.tools else None
            if fallback is None or fallback is route:
                raise
            log.warning("%s rejected native tools (%s); using tool emulation for %s",
                        route.provider.name, err.message, req.model)
            route = fallback
        except BaseException:
            await batches.aclose()
            raise


async def _write_stream(resp: web.StreamResponse, renderer: Any, first: list[Any],
                        stream: AsyncIterator[list[Any]], *, provider: str,
                        stopping: Callable[[], bool]) -> None:
    """Render and write batch after batch; any failure now ends the stream with the
    protocol's error event, never a traceback or a fake normal ending."""
    render = renderer.render
    try:
        await resp.write(b"".join([render(ev) for ev in first]))
        async for batch in stream:
            await resp.write(b"".join([render(ev) for ev in batch]))
    except P5ProxyError as err:
        log.warning("stream from %s failed after the first byte: %s", provider, err)
        await resp.write(renderer.error(err))
    except (ConnectionError, web.HTTPException):
        raise
    except asyncio.CancelledError:
        if stopping():   # the grace period is over: say why the stream ends here
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await resp.write(renderer.error(P5ProxyError(
                        "the gateway is shutting down", status=503, kind="overloaded_error")))
        raise
    except Exception:
        log.exception("internal error while streaming from %s", provider)
        await resp.write(renderer.error(P5ProxyError("internal error in the gateway")))
    await resp.write_eof()
