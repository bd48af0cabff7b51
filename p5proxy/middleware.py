"""Client authentication, the request body's limits, and the one place errors are rendered, in
the caller's protocol."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import orjson
from aiohttp import web

from . import metrics, record
from .access import RateLimited, presented_key, settle
from .admin import is_admin_path
from .appkeys import ACCESS, BODY, CLIENT, CLIENT_IP, REQUEST_ID, STATE
from .errors import P5ProxyError, UnknownModel, kind_for_status
from .forwarded import client_ip
from .inputs import read_body
from .record import REQUEST_ID_HEADER
from .surfaces import ANTHROPIC, OPENAI, Surface

__all__ = ["gateway_middleware", "surface_for", "client_key"]

log = logging.getLogger("p5proxy")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset(("/", "/health", "/api/hello"))
_TRANSIENT = frozenset((429, 500, 502, 503, 504, 529))   # worth a retry: they carry Retry-After
_RETRY_AFTER = "2"                                  # seconds, when the upstream gave none


def surface_for(request: web.Request) -> Surface:
    path = request.path
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1/chat"):
        return OPENAI
    return ANTHROPIC if "anthropic-version" in request.headers else OPENAI


client_key = presented_key   # the key a client sent (kept under its older name)


def _error_response(request: web.Request, err: P5ProxyError, rid: str) -> web.Response:
    surface = surface_for(request)
    status = surface.error_status(err)
    resp = web.Response(body=orjson.dumps(surface.error_body(err, rid)),
                        status=status, content_type="application/json")
    if err.retry_after:
        resp.headers["Retry-After"] = err.retry_after
    elif status in _TRANSIENT and not (isinstance(err, RateLimited) and not err.should_retry):
        # so that front-ends (one-api, SDKs) back off and retry
        resp.headers["Retry-After"] = _RETRY_AFTER
    if isinstance(err, RateLimited):   # the SDKs retry a 429 unless told not to
        resp.headers["x-should-retry"] = "true" if err.should_retry else "false"
    if err.status in (408, 413):   # the body was not read to its end: the connection is done
        resp.force_close()
    return resp


async def _gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    rec = record.begin(request, surface_for(request).name)
    if not request.path.startswith("/v1/"):   # only API requests are counted, logged, stored
        return await _handle(request, handler, rec)
    try:
        resp = await _handle(request, handler, rec)
    except BaseException as exc:
        _redact_record(request, rec)
        record.finish(request, rec, None, exc)
        raise
    _redact_record(request, rec)
    record.finish(request, rec, resp, None)
    return resp


# aiohttp marks a middleware with an attribute, which a compiled function cannot carry (setup.py)
gateway_middleware = web.middleware(partial(_gateway))


def _redact_record(request: web.Request, rec: record.RequestRecord) -> None:
    """An error noted outside the handler's own redaction (an unexpected exception's text)
    may repeat a secret. (A stream's error events are scrubbed as they are written:
    record._Tap.)"""
    if rec.error_message:
        rec.error_message = request.app[ACCESS].redact(rec.error_message, request)


async def _handle(request: web.Request, handler: Handler,
                  rec: record.RequestRecord) -> web.StreamResponse:
    rid = request[REQUEST_ID] = rec.request_id
    config = request.app[STATE].config
    proxies = config.server.trusted_proxies
    # recorded and logged as the client, not as the proxy in front
    rec.client_ip = request[CLIENT_IP] = (
        client_ip(request.remote, request.headers.get("X-Forwarded-For"), proxies)
        if proxies else request.remote)
    try:
        path = request.path
        own_key = path in _OPEN_PATHS or (path == "/metrics" and bool(metrics.keys(config))) \
            or is_admin_path(path)   # open, or checking their own key
        request[CLIENT] = None if own_key else request.app[ACCESS].authenticate(request)
        if request.body_exists:   # size limit and read deadline
            body = request[BODY] = await read_body(request)
            if config.logging.bodies:
                rec.request_body = body
        try:
            resp = await handler(request)
        finally:
            settle(request)   # tokens the answer used, against the key's tokens per minute
    except P5ProxyError as err:
        err.message = request.app[ACCESS].redact(err.message, request)
        if err.status >= 500:
            log.warning("%s %s from %s -> %s: %s", request.method, request.path,
                        request[CLIENT_IP], err.status, err.message)
        resp = _error_response(request, err, rid)
        record.note_error(rec, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status != 404 else f"no route for {request.method} {request.path}"
        err_cls = UnknownModel if exc.status == 404 else P5ProxyError
        http_err = err_cls(message or exc.reason, status=exc.status,
                           kind=kind_for_status(exc.status))
        resp = _error_response(request, http_err, rid)
        record.note_error(rec, http_err)
    except ConnectionError:
        raise   # the client is gone: nobody to answer
    except Exception:   # a bug: still answer in the caller's protocol, and say where in the log
        log.exception("internal error in %s %s", request.method, request.path)
        bug = P5ProxyError("internal error in the gateway")
        resp = _error_response(request, bug, rid)
        record.note_error(rec, bug)
    if not resp.prepared:   # (a stream was prepared with them: routes/chat.py)
        resp.headers.setdefault(REQUEST_ID_HEADER, rid)
        resp.headers.setdefault(surface_for(request).request_id_header, rid)
        if resp.status == 408:   # a client too slow to send its body: answer, then hang up
            await resp.prepare(request)   # (aiohttp would otherwise linger 10 s reading it)
            await resp.write_eof()
            request.protocol.force_close()
    return resp
