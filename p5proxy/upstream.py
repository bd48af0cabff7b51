"""The only upstream HTTP: one shared client session, explicit phase timeouts, the gateway's
own deadline around every read, and the upstream answer turned into batches of StreamEvents.

Errors before the first event are raised (the route answers with a real HTTP error); errors
after it are raised from the iterator and end the client's stream with an error event. The
steps that are not generators (send, read a JSON answer, make its batch) are in
upstream_calls.py, which is compiled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import aiohttp
import orjson
from yarl import URL

from .canonical import HEARTBEAT, StreamEvent
from .config import ServerConfig, Timeouts
from .deadlines import Deadlines
from .errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from .http1 import Pool, Target, target_of
from .imagefetch import ImageFetcher
from .provider import Provider, UpstreamRequest
from .sse import SSEDecoder
from .upstream_calls import (BROKEN, UpstreamResponse, Waited, events_of, last_events, one_shot,
                             read_json, send)

__all__ = ["UpstreamClient", "Waited"]

log = logging.getLogger(__name__)

Batch = list[StreamEvent]
_HEARTBEAT_BATCH: Batch = [HEARTBEAT]
_STREAM_TYPES = frozenset(("text/event-stream", "application/x-ndjson"))
_T = TypeVar("_T")


def _bounded_get(cache: dict[str, _T], key: str, make: Callable[[str], _T]) -> _T:
    """`make(key)`, kept: parsed once, not on every request. Templated URLs (the HTTP provider)
    could make any number of keys, so the cache starts afresh at 1024."""
    made = cache.get(key)
    if made is None:
        if len(cache) >= 1024:
            cache.clear()
        made = cache[key] = make(key)
    return made


class UpstreamClient:
    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.pool: Pool | None = None                     # direct connections
        self.session: aiohttp.ClientSession | None = None   # through a proxy
        self.images = ImageFetcher()   # only for providers with `fetch_images`
        self.deadlines: Deadlines   # set by start(), on the loop it serves
        # parsed once: aiohttp would parse a URL string and build its timeout on every request
        self._urls: dict[str, URL] = {}
        self._targets: dict[str, Target] = {}
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    def _url(self, url: str) -> URL:
        return _bounded_get(self._urls, url, URL)

    def _target(self, url: str) -> Target:
        return _bounded_get(self._targets, url, target_of)

    def _client_timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        made = self._timeouts.get(timeouts)
        if made is None:
            made = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=timeouts.connect)
        return made

    async def start(self) -> None:
        self.deadlines = Deadlines(asyncio.get_running_loop())
        self.pool = Pool(self.server.pool_limit, self.server.pool_limit_per_host)
        connector = aiohttp.TCPConnector(limit=self.server.pool_limit,
                                         limit_per_host=self.server.pool_limit_per_host,
                                         ttl_dns_cache=300, enable_cleanup_closed=True)
        # No session-wide timeout: every phase gets its own deadline below. No trust_env: the
        # proxy is chosen per provider (p5proxy/proxies.py), NO_PROXY and loopback included.
        # No cookie jar: upstream cookies must not travel between clients (and filtering the
        # jar costs time on every request).
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                             timeout=aiohttp.ClientTimeout(total=None),
                                             cookie_jar=aiohttp.DummyCookieJar(),
                                             json_serialize=lambda o: orjson.dumps(o).decode())

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.session is not None:
            await self.session.close()
        await self.images.close()

    async def events(self, provider: Provider, ureq: UpstreamRequest, timeouts: Timeouts,
                     waited: Waited | None = None) -> AsyncIterator[Batch]:
        assert self.pool is not None and self.session is not None, \
            "UpstreamClient.start() was not awaited"
        waited = waited or Waited()
        started = time.monotonic()
        if provider.proxy.url is None:
            try:
                target = self._target(ureq.url)
            except ValueError as exc:   # a templated URL (http provider) that names no host
                raise UpstreamConnectError(f"cannot reach upstream {provider.name}: {exc}",
                                           provider=provider.name) from None
            resp = await send(self.pool, self.deadlines, provider, ureq, target, timeouts,
                              None, waited)
        else:   # CONNECT and proxy authentication: aiohttp's client does them
            resp = await send(self.session, self.deadlines, provider, ureq, self._url(ureq.url),
                              timeouts, self._client_timeout(timeouts), waited)
        # The request is sent: let its body go. A stream lives long, and orjson's output
        # keeps the buffer it was written into (4 KiB for a small body).
        stream_wanted = ureq.stream
        del ureq
        try:
            if resp.status >= 400:
                raise provider.map_error(resp.status, await read_json(
                    self.deadlines, resp, timeouts, provider, waited), resp.headers)
            ctype = resp.content_type
            if ctype in _STREAM_TYPES or (stream_wanted and ctype != "application/json"):
                # (a stream also answers a non-stream request when the upstream ignores `stream`)
                async for batch in self._stream(resp, provider, timeouts, started, waited):
                    yield batch
            else:   # a JSON answer, also to a stream request: a one-shot stream
                yield one_shot(await read_json(self.deadlines, resp, timeouts, provider, waited),
                               resp, provider)
        finally:
            resp.close()   # never returns an unfinished connection to the pool

    async def _stream(self, resp: UpstreamResponse, provider: Provider, timeouts: Timeouts,
                      started: float, waited: Waited) -> AsyncIterator[Batch]:
        decoder = provider.stream_decoder()
        parser = provider.stream_parser()
        heartbeat = self.server.heartbeat_secs
        content = resp.content
        silent = 0.0
        first = isinstance(decoder, SSEDecoder)   # look once for a JSON body (below)
        while not parser.done:
            wait = min(heartbeat, timeouts.idle - silent)
            try:
                # Data already buffered (a fast upstream's events arrive with its headers or
                # in one burst) needs no deadline: skips a timer handle (call_at + cancel) per
                # read. b"" means empty or EOF; the awaited path below tells them apart.
                chunk = content.read_nowait()
                if not chunk:
                    # Our own deadline: aiohttp can wait forever on broken chunked framing.
                    # Cancelling readany() loses nothing: data stays in the buffer.
                    t0 = time.perf_counter()
                    try:
                        async with self.deadlines.after(wait):
                            chunk = await content.readany()
                    finally:
                        waited.seconds += time.perf_counter() - t0
            except TimeoutError:
                silent += wait
                if silent >= timeouts.idle:
                    raise UpstreamTimeout(f"upstream {provider.name} sent nothing for "
                                          f"{timeouts.idle:g}s", provider=provider.name) from None
                yield _HEARTBEAT_BATCH
                continue
            except BROKEN as exc:
                raise UpstreamProtocolError(f"upstream {provider.name} broke the stream: {exc}",
                                            provider=provider.name) from None
            if not chunk:
                break
            silent = 0.0
            if first:
                first = False
                if chunk.lstrip()[:1] == b"{":
                    # A JSON body under an event-stream content type (an error, or an upstream
                    # that ignored `stream`): not SSE, answer it as a one-shot stream.
                    yield one_shot(await read_json(self.deadlines, resp, timeouts, provider,
                                                   waited, chunk), resp, provider)
                    return
            batch = events_of(decoder, parser, chunk)
            if batch:
                yield batch
            if timeouts.total is not None and time.monotonic() - started > timeouts.total:
                raise UpstreamTimeout(f"upstream {provider.name} exceeded the total time limit "
                                      f"of {timeouts.total:g}s", provider=provider.name)
        tail = last_events(decoder, parser)
        if tail:
            yield tail
