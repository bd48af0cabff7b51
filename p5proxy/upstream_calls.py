"""The upstream call's steps that are not generators, for p5proxy/upstream.py: sending the
request within its deadlines, reading a JSON answer, turning it into one batch. Separate from
upstream.py because they are compiled (setup.py), and its generators cannot be."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

from .canonical import MessageStart, StreamEvent
from .config import Timeouts
from .deadlines import Deadlines
from .errors import HTTPError, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from .http1 import Pool, Response, Target
from .provider import Provider, UpstreamRequest

__all__ = ["send", "read_json", "one_shot", "events_of", "last_events", "Waited",
           "UpstreamResponse", "BROKEN"]

Batch = list[StreamEvent]
# direct upstreams answer through p5proxy/http1.py, proxied ones through aiohttp's client
UpstreamResponse = Response | aiohttp.ClientResponse
BROKEN = (HTTPError, aiohttp.ClientError)   # what reading either one's body may raise


class Waited:
    """Seconds spent waiting on the upstream's network (response headers, body reads, retry
    backoffs): the rest of a request's time is the gateway's own overhead. Also what the
    attempts came to: `retries` (upstream calls after the first) and `fallback` (the fallback
    model that answered; None when the requested one did)."""
    __slots__ = ("seconds", "retries", "fallback")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.retries = 0
        self.fallback: str | None = None


async def send(upstream: Pool | aiohttp.ClientSession, deadlines: Deadlines, provider: Provider,
               ureq: UpstreamRequest, where: Target | URL, timeouts: Timeouts,
               client_timeout: aiohttp.ClientTimeout | None, waited: Waited) -> UpstreamResponse:
    """Send the request; the response once its headers are in (within `first_byte`). A Pool
    takes a Target (and `timeouts.connect`), aiohttp's session (for a proxy) a URL and
    `client_timeout`."""
    t0 = time.perf_counter()
    try:
        async with deadlines.after(timeouts.first_byte) as deadline:   # includes connecting
            if isinstance(upstream, Pool):
                assert isinstance(where, Target)
                return await upstream.request(where, ureq.method, ureq.headers, ureq.body,
                                              timeouts.connect)
            assert isinstance(where, URL) and client_timeout is not None
            return await upstream.request(ureq.method, where, data=ureq.body,
                                          headers=ureq.headers, timeout=client_timeout,
                                          proxy=provider.proxy.url)
    except TimeoutError as exc:
        if deadline.expired():
            raise UpstreamTimeout(f"upstream {provider.name} did not answer within "
                                  f"{timeouts.first_byte:g}s", provider=provider.name) from None
        # the connect timeout (also a TimeoutError), or a TLS handshake's
        raise UpstreamTimeout(f"cannot reach upstream {provider.name}: {exc or 'timed out'}"
                              f" (connect timeout {timeouts.connect:g}s)",
                              provider=provider.name) from None
    except (OSError, HTTPError, aiohttp.ClientError) as exc:
        raise UpstreamConnectError(f"cannot reach upstream {provider.name}: {exc}",
                                   provider=provider.name) from None
    finally:
        waited.seconds += time.perf_counter() - t0


async def read_json(deadlines: Deadlines, resp: UpstreamResponse, timeouts: Timeouts,
                    provider: Provider, waited: Waited, head: bytes = b"") -> Any:
    """The rest of the body (after `head`) as JSON, read within the idle deadline. An error
    status's body that is not JSON becomes {"error": {"message": its text}}."""
    t0 = time.perf_counter()
    try:
        if resp.content.is_eof():   # already here: no timer to arm
            raw = head + await resp.read()
        else:
            async with deadlines.after(timeouts.idle):
                raw = head + await resp.read()
    except TimeoutError:
        raise UpstreamTimeout(f"upstream {provider.name} stalled while sending its answer",
                              provider=provider.name) from None
    except BROKEN as exc:
        raise UpstreamProtocolError(f"upstream {provider.name} broke the connection: {exc}",
                                    provider=provider.name) from None
    finally:
        waited.seconds += time.perf_counter() - t0
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:300].decode("utf-8", "replace")
        if resp.status >= 400:
            return {"error": {"message": text or resp.reason or f"HTTP {resp.status}"}}
        raise UpstreamProtocolError(f"upstream {provider.name} sent invalid JSON: {text!r}",
                                    provider=provider.name) from None


def events_of(decoder: Any, parser: Any, chunk: bytes) -> Batch:
    """The events in one network read of a stream (here, compiled: in the stream generator
    this loop ran interpreted, once per event). `decoder` and `parser` are a provider's
    StreamDecoder and StreamParser, typed Any so that compiled code checks nothing a plugin's
    may return (any iterable)."""
    batch: Batch = []
    for event, data in decoder.feed(chunk):
        batch.extend(parser.feed(event, data))
    return batch


def last_events(decoder: Any, parser: Any) -> Batch:
    """The stream has ended: what the decoder and the parser still hold."""
    tail: Batch = []
    if not parser.done:
        for event, data in decoder.close():
            tail.extend(parser.feed(event, data))
    tail.extend(parser.close())
    return tail


def one_shot(body: Any, resp: UpstreamResponse, provider: Provider) -> Batch:
    """A whole JSON answer as one batch of events (an error body raises)."""
    if not isinstance(body, dict):
        raise UpstreamProtocolError("upstream answered with a non-object body",
                                    provider=provider.name)
    if body.get("error") or body.get("type") == "error":
        raise provider.map_error(resp.status if resp.status >= 400 else 502, body,
                                 resp.headers)
    events: Batch = provider.parse_response(body)
    if events and isinstance(events[0], MessageStart):
        events[0].body = body   # for a verbatim same-protocol answer (routes/chat.py)
    return events
