"""The per-request record: created by the middleware at `request[RECORD]`, filled as the request
goes (chat code, cache, retries), then counted in the metrics, written as one access-log line
and queued for the request log store when the request ends (`finish`).

Other code fills fields directly or through the helpers, which take the record the request
has (`rec = request.get(RECORD)`, looked up once) and tolerate None (no record):

    note_request(rec, req)    model asked for, stream flag
    note_route(rec, route)    provider, upstream model, metrics label; returns the route
    note_usage(rec, usage)    tokens from the final usage
    note_cache(rec, ...)      the response cache's verdict
    tap(rec, renderer, scrub) streams: time to first byte, usage and error events as written

Token convention: `input_tokens` counts every prompt token (cache reads included, as OpenAI's
prompt_tokens); `cached_tokens` is the part read from the upstream's prompt cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import appkeys, metrics
from .accesslog import log_request
from .appkeys import RECORD, STATE
from .canonical import ErrorEvent, MessageDelta, MessageStart, Usage
from .errors import P5ProxyError
from .ids import request_id as new_request_id

__all__ = ["RequestRecord", "begin", "finish", "note_request", "note_route", "note_usage",
           "note_cache", "note_client_left", "tap",
           "incoming_request_id", "REQUEST_ID_HEADER"]

log = logging.getLogger("p5proxy.record")
REQUEST_ID_HEADER = "X-Request-Id"
_MAX_ID = 128
_CLIENT: Any = getattr(appkeys, "CLIENT", None)   # set by client identity (issue 6b) if present


class RequestRecord:
    """One request's facts. A plain class with defaults in its body rather than a dataclass:
    compiled (setup.py), its constructor is native code, where a dataclass keeps the generated
    Python `__init__` (30 assignments per request)."""

    ts: float                         # Unix time the request arrived
    request_id: str
    protocol: str                     # ingress protocol: anthropic | openai
    method: str
    path: str
    started: float                    # perf_counter() at arrival
    client_ip: str | None
    client_key_id: str | None = None  # ClientKey.id (never the key)
    model: str | None = None          # as the client asked
    model_label: str | None = None    # metrics label: the configured entry that matched
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    status: int = 0
    error_type: str | None = None     # P5ProxyError.kind, client_closed, internal_error...
    error_message: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None      # streams: first body byte written to the client
    overhead_ms: float | None = None  # X-Gateway-Overhead-Ms (routes/chat.py)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_status: str | None = None   # response cache: hit | miss | bypass | ...
    cache_source: str | None = None   # memory | redis | inflight ...
    retries: int = 0
    fallback: bool = False            # served by a fallback provider
    stream_open: bool = False
    request_body: bytes | None = None  # only with logging.bodies

    def __init__(self, ts: float, request_id: str, protocol: str, method: str, path: str,
                 started: float = 0.0, client_ip: str | None = None) -> None:
        self.ts = ts
        self.request_id = request_id
        self.protocol = protocol
        self.method = method
        self.path = path
        self.started = started
        self.client_ip = client_ip


def incoming_request_id(value: str | None) -> str | None:
    """A client's X-Request-Id when it is sane: 1..128 printable ASCII characters, no spaces."""
    if not value or len(value) > _MAX_ID:
        return None
    if not all("!" <= ch <= "~" for ch in value):
        return None
    return value


def begin(request: web.Request, protocol: str) -> RequestRecord:
    rid = incoming_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    rec = RequestRecord(time.time(), rid, protocol, request.method, request.path,
                        started=time.perf_counter(), client_ip=request.remote)
    request[RECORD] = rec
    return rec


def note_request(rec: RequestRecord | None, req: Any) -> None:
    if rec is not None:
        rec.model = req.model
        rec.stream = bool(req.stream)


def note_cache(rec: RequestRecord | None, status: str, source: str) -> None:
    """The response cache's verdict (X-Proxy-Cache / X-Proxy-Cache-Source), lower-cased."""
    if rec is not None:
        rec.cache_status, rec.cache_source = status.lower(), source


def note_route(rec: RequestRecord | None, route: Any) -> Any:
    if rec is not None:
        rec.provider = route.provider.name
        rec.upstream_model = route.upstream_model
        rec.model_label = route.model.pattern
    return route


def _set_usage(rec: RequestRecord, usage: Usage | None) -> None:
    if usage is not None:
        rec.input_tokens = usage.prompt_tokens
        rec.output_tokens = usage.output_tokens
        rec.cached_tokens = usage.cache_read_tokens


def note_usage(rec: RequestRecord | None, usage: Usage | None) -> None:
    if rec is not None:
        _set_usage(rec, usage)


def note_error(rec: RequestRecord, err: BaseException) -> None:
    if isinstance(err, P5ProxyError):
        rec.error_type, rec.error_message = err.kind, err.message
    else:
        rec.error_type, rec.error_message = "internal_error", f"{type(err).__name__}: {err}"


class _Tap:
    """A stream renderer that also notes, as events are written: the time to the first byte,
    the usage, and an error event ending the stream. An error's message is scrubbed of
    secrets (`scrub`) before the client sees it: upstreams sometimes echo the key they were
    sent, and after the first byte the middleware's redaction no longer applies."""
    __slots__ = ("_renderer", "_rec", "_scrub")

    def __init__(self, renderer: Any, rec: RequestRecord,
                 scrub: Callable[[str], str] | None = None) -> None:
        self._renderer = renderer
        self._rec = rec
        self._scrub = scrub

    def render(self, ev: Any) -> bytes:
        return self.render_batch((ev,))

    def render_batch(self, batch: Any) -> bytes:
        """The bytes of a batch of events, noted: a loop over the batch rather than a wrapper
        around every event's render (streams are made of many small events)."""
        rec = self._rec
        if rec.ttft_ms is None:
            rec.ttft_ms = (time.perf_counter() - rec.started) * 1000
        for ev in batch:
            kind = type(ev)
            if kind is MessageDelta or kind is MessageStart:
                _set_usage(rec, ev.usage)
            elif kind is ErrorEvent:
                self._scrubbed(ev.error)
                note_error(rec, ev.error)
        render = self._renderer.render
        return b"".join([render(ev) for ev in batch])

    def _scrubbed(self, err: Exception) -> None:
        if self._scrub is not None and isinstance(err, P5ProxyError):
            err.message = self._scrub(err.message)

    def client_left(self) -> None:
        """The client closed the connection before the stream's end."""
        note_client_left(self._rec)

    def error(self, err: Exception) -> bytes:
        self._scrubbed(err)
        note_error(self._rec, err)
        out: bytes = self._renderer.error(err)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._renderer, name)


def tap(rec: RequestRecord | None, renderer: Any,
        scrub: Callable[[str], str] | None = None) -> Any:
    """Wrap a stream renderer just before the stream starts (counts it as open). `scrub`
    takes secrets out of the message of an error event."""
    if rec is None:
        return renderer
    rec.stream = rec.stream_open = True
    rec.status = 200   # what the stream's status line will say
    metrics.stream_opened()
    return _Tap(renderer, rec, scrub)


def note_client_left(rec: RequestRecord | None) -> None:
    """The client closed the connection before its answer was all written."""
    if rec is not None:
        rec.error_type = "client_closed"
        rec.error_message = "the client closed the connection"


def finish(request: web.Request, rec: RequestRecord, resp: web.StreamResponse | None,
           exc: BaseException | None) -> None:
    """The request is over (answered, failed or cancelled): count, log and store it. Never
    raises: observability must not break a request."""
    try:
        _complete(request, rec, resp, exc)
        state = request.app[STATE]
        if state.config.metrics.enabled:
            metrics.observe(rec)
        log_request(rec, state.config.logging, resp)
        store = getattr(state, "request_log", None)
        if store is not None:
            store.add(rec)
    except Exception:   # noqa: BLE001
        log.exception("recording request %s failed", rec.request_id)


def _complete(request: web.Request, rec: RequestRecord, resp: web.StreamResponse | None,
              exc: BaseException | None) -> None:
    rec.latency_ms = (time.perf_counter() - rec.started) * 1000
    if rec.stream_open:
        rec.stream_open = False
        metrics.stream_closed()
    if _CLIENT is not None:
        rec.client_key_id = getattr(request.get(_CLIENT), "id", None)
    if resp is not None:
        rec.status = resp.status
    if isinstance(exc, (asyncio.CancelledError, ConnectionError)):   # the client left
        stopping = request.app[STATE].stopping
        rec.error_type = "shutdown" if stopping else "client_closed"
        rec.error_message = ("the gateway stopped during the request" if stopping else
                             "the client closed the connection")
        rec.status = rec.status or 499
    elif exc is not None:
        note_error(rec, exc)
        rec.status = rec.status or 500
