"""Where a chat answer comes from: the cache, an identical request already under way (here or
on another instance), or a new upstream call that others may join.

`open_answer` returns the first batch and the rest, like attempts.py `start_upstream`, plus the
values of the X-Proxy-Cache and X-Proxy-Cache-Source headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..access import presented_key
from ..aggregate import Aggregator
from ..appkeys import CLIENT
from ..cachekey import cache_key
from ..canonical import ChatRequest, StreamEvent, TextDelta
from ..flight import Flight
from ..provider import Route
from ..replay import replay_events
from ..response_cache import LeaderLost, ResponseCache
from ..upstream import Waited

__all__ = ["open_answer", "Answer", "CACHE_HEADER", "CACHE_SOURCE_HEADER"]

log = logging.getLogger("p5proxy.cache")

CACHE_HEADER = "X-Proxy-Cache"
CACHE_SOURCE_HEADER = "X-Proxy-Cache-Source"
Batch = list[StreamEvent]
Start = Callable[[Any, ChatRequest, Route, Waited],
                 Awaitable[tuple[AsyncGenerator[Batch, None], Batch, Route]]]


@dataclass(slots=True)
class Answer:
    first: Batch
    rest: AsyncGenerator[Batch, None]
    route: Route
    status: str            # HIT | MISS | BYPASS
    source: str            # memory | redis | inflight | live


def _client_wishes(request: web.Request) -> tuple[bool, bool]:
    """(may read the cache, may store the answer) from X-Proxy-Cache / Cache-Control."""
    if request.headers.get(CACHE_HEADER, "").strip().lower() == "bypass":
        return False, True
    control = request.headers.get("Cache-Control", "").lower()
    if "no-store" in control:
        return False, False
    if "no-cache" in control:
        return False, True
    return True, True


def _tenant(request: web.Request, shared: bool) -> str:
    """Whose cache entries these are: the authenticated key's id; on an open gateway, a hash
    of whatever key the client presented."""
    if shared:
        return "*"
    client = request.get(CLIENT)
    if client is not None:
        return f"id:{client.id}"
    key = presented_key(request)
    return hashlib.sha256(key.encode()).hexdigest()[:24] if key else "*"


async def _replay(batches: list[Batch]) -> AsyncGenerator[Batch, None]:
    for batch in batches:
        yield batch


async def _upstream(start: Start, state: Any, req: ChatRequest, route: Route, waited: Waited,
                    flight: Flight) -> AsyncGenerator[Batch, None]:
    rest, first, flight.route = await start(state, req, route, waited)
    async with contextlib.aclosing(rest):
        yield first
        async for batch in rest:
            yield batch


async def _followed(cache: ResponseCache, remote: AsyncIterator[Batch], key: str, start: Start,
                    state: Any, req: ChatRequest, route: Route, waited: Waited,
                    flight: Flight) -> AsyncGenerator[Batch, None]:
    """Another instance's answer, relayed; if that instance stops before its first batch, ask
    upstream from here instead (and lead, when the lease can be had)."""
    flight.route = route
    try:
        async for batch in remote:
            yield batch
        return
    except LeaderLost:
        log.warning("the instance answering %s… stopped first; asking upstream here", key[:12])
    cache.stats.takeovers += 1
    if await cache.follow(key) is None:
        cache.lead(key, flight)
    async for batch in _upstream(start, state, req, route, waited, flight):
        yield batch


def _store_when_done(cache: ResponseCache, key: str, ttl: float,
                     route: Route) -> Callable[[Flight], None]:
    def store(flight: Flight) -> None:
        if not flight.succeeded:
            return
        answered = flight.route
        if answered is not None and (answered.provider.name, answered.upstream_model) != (
                route.provider.name, route.upstream_model):
            return   # a fallback model answered: the next request should try the primary again
        agg = Aggregator()
        try:
            for batch in flight.log:
                for ev in batch:
                    if type(ev) is TextDelta and (ev.logprobs is not None or ev.refusal):
                        # per-token data a replay (re-chunked text) cannot give back, and a
                        # refusal it would replay as plain text
                        return
                    agg.feed(ev)
            final = agg.result()
        except Exception:   # an error event or a truncated stream: never kept
            return
        cache.put(key, final, ttl)
    return store


def _forget(flights: dict[str, Flight]) -> Callable[[Flight], None]:
    def forget(flight: Flight) -> None:
        if flights.get(flight.key) is flight:
            del flights[flight.key]
    return forget


async def open_answer(state: Any, request: web.Request, req: ChatRequest, route: Route,
                      waited: Waited, start: Start) -> Answer:
    """With the response cache on (without it, routes/chat.py goes upstream directly)."""
    cache: ResponseCache | None = state.cache
    assert cache is not None
    settings = state.config.cache
    read, store = _client_wishes(request)
    key = cache_key(req, route, _tenant(request, settings.shared_across_keys))
    flights: dict[str, Flight] = state.flights
    if read:
        hit = await cache.get(key)
        if hit is not None:
            cache.stats.hits += 1
            batches = replay_events(hit[0])
            return Answer(batches[0], _replay(batches[1:]), route, "HIT", hit[1])
        flight = flights.get(key) if settings.dedup else None
        if flight is not None:
            cache.stats.inflight_joins += 1
            reader = flight.read()
            first = await anext(reader)   # the leader's error, if it failed before answering
            return Answer(first, reader, flight.route or route, "HIT", "inflight")
    else:
        cache.stats.bypasses += 1
    flight = Flight(key, heartbeat_secs=state.config.server.heartbeat_secs)
    status, source = ("MISS" if read else "BYPASS"), "live"
    n = req.raw.get("n")
    if store and not (type(n) is int and n > 1):   # an entry keeps one choice
        ttl = settings.tool_ttl_secs if req.tools else settings.ttl_secs
        flight.on_end.append(_store_when_done(cache, key, ttl, route))
    if read and settings.dedup:
        # registered before the first await, so that identical requests of this instance
        # join it here rather than through Redis
        flights[key] = flight
        flight.on_end.append(_forget(flights))
    try:
        remote = await cache.follow(key) if read and settings.dedup else None
    except BaseException as exc:   # e.g. this client left: those who joined must not wait
        flight.abandon(exc)
        raise
    if remote is not None:
        cache.stats.remote_joins += 1
        status, source = "HIT", "inflight"
        flight.start(_followed(cache, remote, key, start, state, req, route, waited, flight))
    else:
        if read:
            cache.stats.misses += 1
        flight.start(_upstream(start, state, req, route, waited, flight))
        if read and settings.dedup:
            cache.lead(key, flight)
    reader = flight.read()
    first = await anext(reader, [])
    return Answer(first, reader, flight.route or route, status, source)
