"""Client authentication and the one place errors are rendered, in the caller's protocol."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from . import metrics, record
from .admin import is_admin_path
from .appkeys import CLIENT_IP, RECORD, REQUEST_ID, STATE
from .forwarded import client_ip
from .errors import AuthError, P5ProxyError, UnknownModel, kind_for_status
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


def client_key(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _check_auth(request: web.Request, keys: tuple[str, ...]) -> None:
    key = client_key(request)
    if key is None:
        raise AuthError("missing API key: send it as x-api-key or Authorization: Bearer")
    encoded = key.encode()
    if not any(hmac.compare_digest(encoded, k.encode()) for k in keys):
        raise AuthError("invalid API key")


def _note_error(request: web.Request, err: P5ProxyError) -> None:
    rec = request.get(RECORD)
    if rec is not None:
        record.note_error(rec, err)


def _error_response(request: web.Request, err: P5ProxyError, rid: str) -> web.Response:
    surface = surface_for(request)
    status = surface.error_status(err)
    resp = web.Response(body=orjson.dumps(surface.error_body(err, rid)),
                        status=status, content_type="application/json")
    if err.retry_after:
        resp.headers["Retry-After"] = err.retry_after
    elif status in _TRANSIENT:   # so that front-ends (one-api, SDKs) back off and retry
        resp.headers["Retry-After"] = _RETRY_AFTER
    return resp


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rec = record.begin(request, surface_for(request).name)
    if not request.path.startswith("/v1/"):   # only API requests are counted, logged, stored
        return await _handle(request, handler, rec.request_id)
    try:
        resp = await _handle(request, handler, rec.request_id)
    except BaseException as exc:
        record.finish(request, rec, None, exc)
        raise
    record.finish(request, rec, resp, None)
    return resp


async def _handle(request: web.Request, handler: Handler, rid: str) -> web.StreamResponse:
    request[REQUEST_ID] = rid
    config = request.app[STATE].config
    proxies = config.server.trusted_proxies
    request[CLIENT_IP] = (client_ip(request.remote, request.headers.get("X-Forwarded-For"),
                                    proxies) if proxies else request.remote)
    rec = request.get(RECORD)
    if rec is not None:   # recorded and logged as the client, not as the proxy in front
        rec.client_ip = request[CLIENT_IP]
    try:
        keys = config.auth_keys
        if keys and request.path not in _OPEN_PATHS and not (
                request.path == "/metrics" and metrics.keys(config)) \
                and not is_admin_path(request.path):   # these check their own key
            _check_auth(request, keys)
        if config.logging.bodies and request.can_read_body:
            request[RECORD].request_body = await request.read()   # aiohttp keeps it for the handler
        resp = await handler(request)
    except P5ProxyError as err:
        if err.status >= 500:
            log.warning("%s %s from %s -> %s: %s", request.method, request.path,
                        request[CLIENT_IP], err.status, err.message)
        resp = _error_response(request, err, rid)
        _note_error(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status != 404 else f"no route for {request.method} {request.path}"
        err_cls = UnknownModel if exc.status == 404 else P5ProxyError
        http_err = err_cls(message or exc.reason, status=exc.status,
                           kind=kind_for_status(exc.status))
        resp = _error_response(request, http_err, rid)
        _note_error(request, http_err)
    if not resp.prepared:
        resp.headers.setdefault(surface_for(request).request_id_header, rid)
    return resp
