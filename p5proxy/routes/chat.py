"""The one chat pipeline behind both surfaces: decode, route, call upstream, then either
aggregate (non-streaming client) or render events as they come (streaming client).

The status line is committed only once the upstream has answered successfully with its first
event; earlier failures become real HTTP errors via the error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from ..aggregate import Aggregator
from ..appkeys import RECORD, REQUEST_ID, STATE
from ..canonical import ChatRequest, ErrorEvent
from ..config import RetryConfig
from ..errors import (InvalidRequest, P5ProxyError, PayloadTooLarge, UpstreamError,
                      UpstreamStatusError)
from ..filters import apply_filters
from ..imagefetch import inline_images
from ..keypool import PoolKey
from ..provider import Provider, Route
from ..record import note_cache, note_request, note_route, note_usage, tap
from ..retry import (AUTH_STATUSES, Budget, CredentialsRejected, NoUsableKey, backoff,
                     parse_retry_after, retryable)
from ..surfaces import Surface
from ..tokens import estimate_from_body_size, estimate_input_tokens
from ..upstream import Waited
from .shared_answer import CACHE_HEADER, CACHE_SOURCE_HEADER, open_answer

__all__ = ["read_json", "handle_chat", "SSE_HEADERS", "OVERHEAD_HEADER", "FALLBACK_HEADER"]

log = logging.getLogger("p5proxy.chat")

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no", "Connection": "keep-alive"}


async def read_json(request: web.Request) -> Any:
    limit = request.app[STATE].config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes exceeds the "
                              f"limit of {limit} bytes (server.max_body_bytes)")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes "
                              "(server.max_body_bytes)") from None
    if not raw:
        raise InvalidRequest("body: the request body is empty; send a JSON object", param="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc}", param="body") from None


OVERHEAD_HEADER = "X-Gateway-Overhead-Ms"
FALLBACK_HEADER = "X-Proxy-Fallback"   # the fallback model that answered


def _overhead_ms(started: float, waited: Waited) -> str:
    """The gateway's own time so far: wall time minus time spent waiting on the upstream."""
    return f"{(time.perf_counter() - started - waited.seconds) * 1000:.2f}"


async def handle_chat(request: web.Request, surface: Surface) -> web.StreamResponse:
    started = time.perf_counter()
    state = request.app[STATE]
    req = surface.decode(await read_json(request), request.headers)
    note_request(request, req)   # the request log record (record.py)
    waited = Waited()
    route = note_route(request, state.router.resolve(req.model))
    try:
        answer = await open_answer(state, request, req, route, waited, _start)
    finally:
        _note_attempts(request, waited)
    batches, first, route = answer.rest, answer.first, answer.route
    if waited.fallback:
        note_route(request, route)   # the provider that answered
    cache_headers = {CACHE_HEADER: answer.status, CACHE_SOURCE_HEADER: answer.source}
    note_cache(request, answer.status, answer.source)
    passthrough = route.provider.protocol == req.ingress and not req.rewritten
    estimate = 0
    if not passthrough:   # message_start needs input tokens before the upstream reports them
        size = request.content_length
        estimate = estimate_from_body_size(req, size) if size else estimate_input_tokens(req)
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
            whole = web.Response(body=orjson.dumps(body), content_type="application/json",
                                 headers={OVERHEAD_HEADER: _overhead_ms(started, waited),
                                          **cache_headers})
            if waited.fallback:
                whole.headers[FALLBACK_HEADER] = waited.fallback
            return whole
        renderer = surface.renderer(model=req.model, include_usage=req.include_usage,
                                    input_estimate=estimate, passthrough=passthrough)
        renderer = tap(request, renderer)   # notes time to first byte, usage, error events
        resp = web.StreamResponse(headers={**SSE_HEADERS, **cache_headers})
        resp.headers[surface.request_id_header] = request[REQUEST_ID]
        resp.headers[OVERHEAD_HEADER] = _overhead_ms(started, waited)   # up to the first byte
        if waited.fallback:
            resp.headers[FALLBACK_HEADER] = waited.fallback
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


def _note_attempts(request: web.Request, waited: Waited) -> None:
    rec = request.get(RECORD)
    if rec is not None:
        rec.retries, rec.fallback = waited.retries, waited.fallback is not None


async def _start(state: Any, req: ChatRequest, route: Route, waited: Waited
                 ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    """Send the request upstream and wait for its first batch of events. Nothing has reached
    the client yet, so failures may still be retried (p5proxy/retry.py): another key, after a
    backoff, then the model's `fallbacks` in order (each resolved and translated for its own
    provider). What is left raises: the client gets a real HTTP error. Returns the stream, its
    first batch and the route that answered; `waited` counts the retries and names the
    fallback that answered."""
    budget = Budget(state.config.retry.max_wait, waited)
    pristine = copy.copy(req) if route.model.fallbacks or route.filters else None
    names: list[str | None] = [None, *route.model.fallbacks]
    failure: UpstreamError | None = None
    fetched: dict[str, tuple[str, str]] = {}   # images by URL, for providers that need bytes
    for n, name in enumerate(names):
        if name is not None:
            assert failure is not None and pristine is not None
            log.warning("model %s failed (%s); trying fallback %s", req.model, failure.message,
                        name)
            _restore(req, pristine)
            route = state.router.resolve(name)
        try:
            batches, first, route = await _attempts(state, req, route, waited, budget,
                                                    model=name or req.model, pristine=pristine,
                                                    fetched=fetched)
        except UpstreamError as err:
            if n == len(names) - 1 or not retryable(err):
                raise
            failure = err
            continue
        waited.fallback = name
        return batches, first, route
    raise AssertionError("unreachable")   # the last name returns or raises


def _restore(req: ChatRequest, pristine: ChatRequest | None) -> None:
    """Undo what filters (tool emulation) did to the request, before sending it again."""
    if pristine is not None:
        for f in dataclasses.fields(req):
            setattr(req, f.name, getattr(pristine, f.name))


async def _attempts(state: Any, req: ChatRequest, route: Route, waited: Waited, budget: Budget,
                    *, model: str, pristine: ChatRequest | None,
                    fetched: dict[str, tuple[str, str]]
                    ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    """One model's attempts: rotate keys, retry retryable failures with backoff within the
    provider's `retry` policy and the request's budget. A route with `tools: auto` whose
    upstream rejects native tools is retried once with tool emulation (not counted)."""
    provider = route.provider
    policy: RetryConfig = provider.config.retry or state.config.retry
    pool = provider.pool
    tried: set[str] = set()
    attempt = 0
    while True:
        key = await pool.acquire(tried) if len(pool) else None
        if len(pool) and key is None:
            raise _no_usable_key(provider)
        attempt += 1
        try:
            return await _attempt(state, req, route, waited, key, fetched)
        except UpstreamError as err:
            fallback = state.router.tools_fallback(model, route, err) if req.tools else None
            if fallback is not None and fallback is not route:
                log.warning("%s rejected native tools (%s); using tool emulation for %s",
                            provider.name, err.message, model)
                route, attempt = fallback, attempt - 1
                _restore(req, pristine)
                continue
            delay = await _after_failure(err, provider, key, tried, policy, attempt)
            if delay is None or not budget.allows(delay):
                raise _final(err, provider) from None
            log.info("upstream %s failed (%s); retry %d in %.2fs", provider.name, err.message,
                     attempt, delay)
            await budget.wait(delay)
            _restore(req, pristine)


async def _attempt(state: Any, req: ChatRequest, route: Route, waited: Waited,
                   key: PoolKey | None, fetched: dict[str, tuple[str, str]]
                   ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    if route.provider.image_fetch is not None:   # an upstream that takes image bytes only
        await inline_images(req, state.upstream.images, route.provider.image_fetch, fetched)
    runs = [f.open(req, route) for f in route.filters]
    ureq = route.provider.build_request(req, route)
    if key is not None:
        ureq.headers.update(route.provider.auth_headers(key.key))
    batches = state.upstream.events(route.provider, ureq, route.provider.config.timeouts, waited)
    if runs:
        batches = apply_filters(batches, runs)
    try:
        first: list[Any] = await anext(batches, [])
        if first and isinstance(first[0], ErrorEvent):
            raise first[0].error
    except BaseException:
        await batches.aclose()
        raise
    if key is not None:
        route.provider.pool.succeeded(key)
    return batches, first, route


async def _after_failure(err: UpstreamError, provider: Provider, key: PoolKey | None,
                         tried: set[str], policy: RetryConfig, attempt: int) -> float | None:
    """Record what the failure says about the key; the delay before the next attempt, or None
    when this model should not be tried again."""
    pool = provider.pool
    if err.status in AUTH_STATUSES and isinstance(err, UpstreamStatusError):
        if key is None:
            return None
        await pool.disable(key, err.status)
        tried.add(key.id)
        return 0.0 if attempt < policy.attempts and pool.has_other(key, tried) else None
    retry_after = parse_retry_after(err.retry_after)
    if err.status == 429 and key is not None:
        await pool.cool(key, retry_after, base=policy.cooldown_base, cap=policy.cooldown_max)
        tried.add(key.id)
    if not retryable(err) or attempt >= policy.attempts:
        return None
    if err.status == 429 and key is not None and pool.has_other(key, tried):
        return 0.0   # another key right away
    if err.status == 429 and key is not None:
        retry_after = pool.retry_after()   # every key is cooling: until the first is back
    delay = backoff(policy, attempt)
    if retry_after is not None:
        if retry_after > policy.backoff_max:
            return None   # not worth holding the client: it gets the Retry-After
        delay = max(delay, retry_after)
    return delay


def _final(err: UpstreamError, provider: Provider) -> UpstreamError:
    """What the client is told when a model gives up: never the upstream's 401/403 (that is
    about the gateway's key, not the client's), and the pool's shortest cooldown as
    Retry-After when every key is cooling."""
    if err.status in AUTH_STATUSES and isinstance(err, UpstreamStatusError):
        if len(provider.pool) and provider.pool.retry_after() is not None:
            return _no_usable_key(provider)   # the other keys are cooling: a 429 for now
        return CredentialsRejected(
            f"upstream {provider.name} is not available: it did not accept the gateway's "
            "credentials (see the gateway's log)", status=502, kind="api_error",
            provider=provider.name)
    if err.status == 429 and len(provider.pool):
        wait = provider.pool.retry_after()
        if wait is not None:
            err.retry_after = str(max(1, math.ceil(wait)))
    return err


def _no_usable_key(provider: Provider) -> UpstreamError:
    pool = provider.pool
    wait = pool.retry_after()
    if wait is None:   # all disabled
        return NoUsableKey(f"upstream {provider.name} is not available: none of its keys is "
                           "usable (see the gateway's log)", status=503, kind="api_error",
                           provider=provider.name)
    return NoUsableKey(f"upstream {provider.name} is rate-limited; retry in {wait:.0f}s",
                       status=429, kind="rate_limit_error", provider=provider.name,
                       retry_after=str(max(1, math.ceil(wait))))


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
