"""Input limits on what clients send: body size (413), read time (408), JSON nesting (400).

- `server.max_body_bytes`: a declared or actual body larger than this gets 413.
- `server.client_read_timeout`: the whole body must arrive within this many seconds of the
  headers (a client dribbling its body is answered 408 and disconnected). The headers themselves
  are bounded by the server's keep-alive timeout, set to the same value (server.py).
- `server.max_json_depth`: arrays and objects nested deeper than this get 400 (orjson itself
  stops at 1024 levels, and its encoder at 255: a deep body would otherwise fail later).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import StreamReader, web

from .appkeys import BODY, STATE
from .errors import InvalidRequest, PayloadTooLarge, RequestError
from .rawjson import LAZY_FROM, RawJSON, Splitter

__all__ = ["RequestTimeout", "read_body", "read_json", "parse_json", "too_deep"]


class RequestTimeout(RequestError):
    status = 408
    kind = "timeout_error"


def _too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    what = f"request body of {size} bytes" if size is not None else "request body"
    return PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes (server.max_body_bytes)")


async def read_body(request: web.Request) -> bytes:
    """The whole body, within the size limit and the read deadline (kept where aiohttp keeps
    what `request.read()` read: later `read()`, `post()` and `json()` calls return it)."""
    server = request.app[STATE].config.server
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, request.content_length)
    try:
        if request.content.is_eof():   # all of it came with the headers: no deadline needed
            body = await _read_all(request.content, limit)
        else:
            async with asyncio.timeout(server.client_read_timeout):
                body = await _read_all(request.content, limit)
    except TimeoutError:
        raise RequestTimeout(f"body: the request body did not arrive within "
                             f"{server.client_read_timeout:g} s (server.client_read_timeout)",
                             param="body") from None
    request._read_bytes = body   # aiohttp's cache of `read()` (BaseRequest.read)
    return body


async def _read_all(content: StreamReader, limit: int) -> bytes:
    """The body's chunks, joined once (aiohttp's `request.read()` copies each into a growing
    bytearray, then the whole into bytes: three copies of a 120 KB body where one will do, or
    none when it came in one piece)."""
    content.set_read_chunk_size(limit)   # as aiohttp's: a compressed body inflates in large chunks
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# orjson encodes at most 254 nested arrays/objects and raises beyond. Wrapping a value in
# (254 - limit) arrays and encoding it tells, at C speed, whether it nests deeper than `limit`:
# about 60 us for a 120 KB Claude Code body, where walking it in Python takes 200-300 us.
_ORJSON_MAX_DEPTH = 254
# Counting brackets runs at about 2 GB/s: for a body larger than this, encoding it costs less
# than counting first (a 120 KB body has thousands of brackets anyway).
_COUNT_BELOW = 16 * 1024


def _as_leaf(value: Any) -> None:
    """Raw schemas (rawjson.py) are measured apart: here they count as leaves."""
    if not isinstance(value, RawJSON):
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def too_deep(value: Any, limit: int, raw: bytes | None = None) -> bool:
    """Whether arrays/objects nest deeper than `limit` (the body itself is level 1)."""
    if not (type(value) is dict or type(value) is list) or not 0 < limit < _ORJSON_MAX_DEPTH:
        return False
    if raw is not None and len(raw) <= _COUNT_BELOW and raw.count(b"{") + raw.count(b"[") <= limit:
        return False   # fewer brackets than levels: small requests end here, in microseconds
    wrapped = value
    for _ in range(_ORJSON_MAX_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped, default=_as_leaf)
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):
            return True
        raise
    return False


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 400 naming `body` for an empty, invalid or too deeply nested one."""
    raw = request.get(BODY)   # read by the middleware
    if raw is None:
        raw = await read_body(request)
    return parse_json(raw, request.app[STATE].config.server.max_json_depth)


def parse_json(raw: bytes, depth: int, splitter: Splitter | None = None) -> Any:
    """`raw` as JSON; 400 naming `body` for an empty, invalid or too deeply nested one.
    With the client protocol's `splitter`, a large body's tool schemas stay JSON bytes
    (rawjson.py)."""
    if not raw:
        raise InvalidRequest("body: the request body is empty; send a JSON object", param="body")
    if splitter is not None and len(raw) >= LAZY_FROM:
        split = splitter.split(raw, depth)
        if split is not None:   # else parsed whole below, for orjson's error message
            value, suspects, deeper = split   # the schemas count as leaves in `deeper`
            if deeper or any(
                    too_deep(schema.value(), depth - above) for schema, above in suspects):
                raise _depth_error(depth)
            return value
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "ecursion" in str(exc):   # orjson stops at 1024
            raise _depth_error(depth or 1024) from None
        raise InvalidRequest(f"body: invalid JSON: {exc}", param="body") from None
    if too_deep(value, depth, raw):
        raise _depth_error(depth)
    return value


def _depth_error(depth: int) -> InvalidRequest:
    return InvalidRequest(f"body: JSON nested deeper than {depth} levels "
                          "(server.max_json_depth)", param="body")
