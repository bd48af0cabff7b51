"""The upstream HTTP/1.1 client for direct connections: a keep-alive pool of connections, each
an asyncio protocol that parses its responses itself.

Why not aiohttp's client, which the gateway used before and which proxied upstreams still use
(p5proxy/upstream_calls.py): every `ClientSession.request` builds a request object, a response
object, a multidict of default headers, trace hooks, a timer context and a connection wrapper,
and reads the answer through a stream reader: about a third of the gateway's CPU time per small
request (bench/README.md, tenth round). Here a request is one write of preformatted bytes and
its answer is parsed where it arrives. What an upstream call needs is kept: keep-alive with idle
expiry, TLS, a connect timeout, gzip and deflate bodies, chunked and length-framed and
until-close bodies, 1xx answers skipped, back-pressure on a body nobody reads, and a connection
closed (never pooled) when its response is dropped unfinished, which is how a client that leaves
cancels its upstream request.

    pool = Pool(limit=1000, limit_per_host=0)
    resp = await pool.request(target_of("https://api.example/v1/x"), "POST", headers, body, 10.0)
    resp.status, resp.headers["content-type"]
    chunk = await resp.content.readany()   # b"" at the end
    resp.close()                           # closes the connection if the body is unfinished
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections import deque
from typing import Any, Final, cast

import aiohappyeyeballs
from multidict import CIMultiDict

from . import __version__
from .errors import HTTPError

__all__ = ["Target", "target_of", "Pool", "Response", "Body"]

KEEPALIVE: Final = 15.0            # seconds an idle pooled connection is kept (aiohttp's default)
MAX_HEAD: Final = 64 * 1024        # status line and headers of one response
HIGH_WATER: Final = 256 * 1024     # unread body bytes past which the socket is no longer read
_DEFAULTS = (("accept", "Accept: */*\r\n"),
             ("accept-encoding", "Accept-Encoding: gzip, deflate\r\n"),
             ("content-type", "Content-Type: application/json\r\n"),
             ("user-agent", f"User-Agent: p5proxy/{__version__}\r\n"))

# what a connection reads next
_IDLE: Final = 0          # nothing: no request in flight
_HEAD: Final = 1          # the status line and headers
_LENGTH: Final = 2        # a body of Content-Length bytes
_CHUNK_SIZE: Final = 3    # a chunked body's size line
_CHUNK_DATA: Final = 4
_CHUNK_END: Final = 5     # the CRLF after a chunk
_TRAILERS: Final = 6      # after the last chunk, up to an empty line
_UNTIL_CLOSE: Final = 7   # a body that ends when the connection does


class Target:
    """A URL taken apart once: where to connect, and the request line's start."""

    def __init__(self, scheme: str, host: str, port: int, path: str) -> None:
        self.tls = scheme == "https"
        self.host = host
        self.port = port
        self.key = (host, port, self.tls)
        default = 443 if self.tls else 80
        host_header = f"[{host}]" if ":" in host else host
        if port != default:
            host_header = f"{host_header}:{port}"
        self.path = path
        self.host_line = f"Host: {host_header}\r\n"


def target_of(url: Any) -> Target:
    """A yarl URL (or a string) as a Target; ValueError for what HTTP/1.1 cannot reach."""
    from yarl import URL   # the caller keeps Targets, so this runs once per URL
    u = url if isinstance(url, URL) else URL(url)
    host = u.raw_host   # IDNA-encoded, as DNS and the Host header want it
    if u.scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL: {url}")
    port = u.port or (443 if u.scheme == "https" else 80)
    return Target(u.scheme, host, port, u.raw_path_qs or "/")


class Body:
    """A response body as it arrives: the subset of aiohttp's StreamReader the gateway uses."""

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn   # None once the body is complete or broken
        self._loop = conn.pool.loop
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def is_eof(self) -> bool:
        """Whether the whole body has arrived (it may still be unread)."""
        return self._eof

    def read_nowait(self) -> bytes:
        """What has arrived and is unread; b"" when nothing is (or at the end)."""
        if not self._chunks:
            if self._exc is not None:
                raise self._exc
            return b""
        return self._take()

    async def readany(self) -> bytes:
        """The next bytes that arrive; b"" at the end of the body."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._take()

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts: list[bytes] = []
        while True:
            chunk = await self.readany()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._paused:
            self._paused = False
            conn = self._conn
            if conn is not None and conn.transport is not None:
                conn.transport.resume_reading()
        return data

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._paused:
            conn = self._conn
            if conn is not None and conn.transport is not None:
                self._paused = True
                conn.transport.pause_reading()
        self._wake()

    def _end(self, exc: BaseException | None) -> None:
        if exc is None:
            self._eof = True
        else:
            self._exc = exc
        conn = self._conn
        if self._paused and conn is not None and conn.transport is not None:
            self._paused = False   # the connection goes back to the pool: it must read again
            conn.transport.resume_reading()
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Response:
    """An upstream's answer once its head is in: the subset of aiohttp's ClientResponse the
    gateway uses (status, reason, headers, content_type, content, read, close)."""

    def __init__(self, status: int, reason: str, headers: CIMultiDict[str],
                 content: Body) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        ctype = headers.get("Content-Type")
        self.content_type = (ctype.partition(";")[0].strip().lower() if ctype
                             else "application/octet-stream")

    async def read(self) -> bytes:
        return await self.content.read()

    def close(self) -> None:
        """Done with the answer: an unfinished body closes its connection (the upstream sees
        the client leave); a finished one's connection is back in the pool already."""
        conn = self.content._conn
        if conn is not None:
            conn.close()


class Connection:
    """One upstream connection, an asyncio protocol: one request at a time, its response
    parsed as the bytes arrive."""

    def __init__(self, pool: Pool, target: Target) -> None:
        self.pool = pool
        self.key = target.key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._mode = _IDLE
        self._buf = b""          # an incomplete head, chunk-size line or chunk end
        self._left = 0           # bytes left of the body (_LENGTH) or of the chunk (_CHUNK_DATA)
        self._head_waiter: asyncio.Future[Response] | None = None
        self._body: Body | None = None
        self._keep_alive = True
        self._no_body = False    # a HEAD request's answer has none
        self._inflate: Any = None

    def stale(self, now: float) -> bool:
        """Not to be used again: closed, or idle in the pool past KEEPALIVE."""
        return self.closed or now - self.idle_since > KEEPALIVE

    # -- the protocol's callbacks

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._mode == _UNTIL_CLOSE:
            self._complete()
        else:
            reason = f": {exc}" if exc else ""
            self._fail(HTTPError(f"the upstream closed the connection{reason}"))
        self.pool._forget(self)

    def eof_received(self) -> None:
        return None   # the transport closes; connection_lost ends the answer

    def pause_writing(self) -> None:
        pass   # request bodies are bounded (server.max_body_bytes) and written once

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        try:
            self._parse(data)
        except HTTPError as exc:
            self._fail(exc)
            self.close()

    # -- sending

    async def send(self, head: bytes, body: bytes, no_body: bool) -> Response:
        transport = self.transport
        if transport is None or self.closed:
            raise HTTPError("the upstream closed the connection")
        self._mode = _HEAD
        self._no_body = no_body
        waiter: asyncio.Future[Response] = self.pool.loop.create_future()
        self._head_waiter = waiter
        if len(body) < 16384:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        return await waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._fail(HTTPError("the connection was closed"))

    # -- parsing

    def _parse(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        end = len(data)
        out: list[bytes] = []
        while pos < end:
            mode = self._mode
            if mode == _CHUNK_DATA or mode == _LENGTH:
                take = min(self._left, end - pos)
                out.append(data[pos:pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    if mode == _LENGTH:
                        self._deliver(out)
                        out = []
                        self._complete()
                    else:
                        self._mode = _CHUNK_END
            elif mode == _CHUNK_SIZE or mode == _CHUNK_END or mode == _TRAILERS:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 4096:
                        raise HTTPError("the upstream sent an overlong chunk-size line")
                    self._buf = data[pos:]
                    break
                line = data[pos:eol]
                pos = eol + 2
                if mode == _CHUNK_END:
                    if line:
                        raise HTTPError("the upstream's chunked body lacks a chunk's CRLF")
                    self._mode = _CHUNK_SIZE
                elif mode == _TRAILERS:
                    if not line:
                        self._deliver(out)
                        out = []
                        self._complete()
                else:
                    size = _chunk_size(line)
                    if size == 0:
                        self._mode = _TRAILERS
                    elif pos + size + 2 <= end and data.startswith(b"\r\n", pos + size):
                        # the whole chunk is here (usual for a stream: one event per chunk)
                        out.append(data[pos:pos + size])
                        pos += size + 2
                    else:
                        self._left = size
                        self._mode = _CHUNK_DATA
            elif mode == _UNTIL_CLOSE:
                out.append(data[pos:] if pos else data)
                pos = end
            elif mode == _HEAD:
                pos = self._head(data, pos)
                if pos < 0:
                    break
            else:   # _IDLE: bytes nobody asked for
                raise HTTPError("the upstream sent data outside of a response")
        if out:
            self._deliver(out)

    def _head(self, data: bytes, pos: int) -> int:
        """Parse a response head starting at `pos`; where its body starts, or -1 (incomplete,
        kept in the buffer)."""
        stop = data.find(b"\r\n\r\n", pos)
        if stop < 0:
            if len(data) - pos > MAX_HEAD:
                raise HTTPError(f"the upstream's response head is over {MAX_HEAD} bytes")
            if data.find(b"\n\n", pos) >= 0:   # else it would wait for a CRLF that never comes
                raise HTTPError("the upstream ended its response head with bare LFs, not CRLF")
            self._buf = data[pos:]
            return -1
        lines = data[pos:stop].decode("latin-1").split("\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HTTPError(f"the upstream sent an invalid status line: {status_line[:100]!r}")
        status = int(code)
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                raise HTTPError(f"the upstream sent an invalid header line: {line[:100]!r}")
            headers.add(name, value.strip(" \t"))
        body_at = stop + 4
        if status < 200:   # 100 Continue, 103 Early Hints: the real answer follows
            return body_at
        self._frame(version, status, headers)
        waiter = self._head_waiter
        self._head_waiter = None
        body = self._body
        assert body is not None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, reason, headers, body))
        if self._mode == _IDLE:   # no body
            self._complete()
        return body_at

    def _frame(self, version: str, status: int, headers: CIMultiDict[str]) -> None:
        """How the body is framed, whether the connection stays open, and decompression."""
        self._body = Body(self)
        conn_tokens = headers.get("Connection", "").lower()
        self._keep_alive = ("close" not in conn_tokens if version == "HTTP/1.1"
                            else "keep-alive" in conn_tokens)
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = _Deflate()
        elif encoding not in ("", "identity"):
            raise HTTPError(f"the upstream sent a body in an unsupported encoding: {encoding}")
        else:
            self._inflate = None
        if self._no_body or status == 204 or status == 304:
            self._mode = _IDLE
            return
        te = headers.get("Transfer-Encoding")
        if te is not None:
            if te.lower().rstrip().endswith("chunked"):
                self._mode = _CHUNK_SIZE
            else:
                self._mode = _UNTIL_CLOSE
                self._keep_alive = False
            if "Content-Length" in headers:   # both: a smuggling risk, never reuse
                self._keep_alive = False
            return
        length = headers.getall("Content-Length", None)
        if length is None:
            self._mode = _UNTIL_CLOSE
            self._keep_alive = False
            return
        if len(set(length)) != 1 or not length[0].isdigit():
            raise HTTPError(f"the upstream sent an invalid Content-Length: {length!r}")
        self._left = int(length[0])
        self._mode = _LENGTH if self._left else _IDLE

    def _deliver(self, out: list[bytes]) -> None:
        body = self._body
        if body is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as exc:
                raise HTTPError(f"the upstream sent a broken compressed body: {exc}") from None
        if data:
            body._feed(data)

    def _complete(self) -> None:
        """The response is whole: end its body, and pool the connection or close it."""
        body = self._body
        self._body = None
        self._mode = _IDLE
        if body is not None:
            if self._inflate is not None:
                try:
                    tail = self._inflate.flush()
                except zlib.error as exc:
                    body._end(HTTPError(f"the upstream sent a broken compressed body: {exc}"))
                    self.close()
                    return
                self._inflate = None
                if tail:
                    body._feed(tail)
            body._end(None)
        if self._keep_alive and not self.closed:
            self.pool._release(self)
        elif not self.closed:
            self.close()

    def _fail(self, exc: HTTPError) -> None:
        waiter = self._head_waiter
        self._head_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        body = self._body
        self._body = None
        if body is not None:
            body._end(exc)
        self._mode = _IDLE


class _Deflate:
    """`Content-Encoding: deflate` is zlib-wrapped by the standard, raw from some servers."""

    def __init__(self) -> None:
        self._obj: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._obj is None:
            raw = bool(data) and (data[0] & 0x0F) != 8   # no zlib header: raw deflate
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return bytes(self._obj.decompress(data))

    def flush(self) -> bytes:
        return bytes(self._obj.flush()) if self._obj is not None else b""


def _chunk_size(line: bytes) -> int:
    size = line if line.isalnum() else line.partition(b";")[0].strip(b" \t")   # extensions
    if not size or len(size) > 15 or size.lstrip(_HEX_DIGITS):
        raise HTTPError(f"the upstream sent an invalid chunk size: {line[:40]!r}")
    return int(size, 16)


_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"


class Pool:
    """Keep-alive connections per (host, port, TLS); `limit` connections in use at most (0: no
    limit), `limit_per_host` per host; requests beyond them wait for one to come free. Made on
    the event loop it serves."""

    def __init__(self, limit: int, limit_per_host: int) -> None:
        # looked up once: asyncio.get_running_loop() is a getpid() system call on Python 3.11
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._in_use: set[Connection] = set()
        self._in_use_per_key: dict[tuple[str, int, bool], int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = None

    async def request(self, target: Target, method: str, headers: dict[str, str], body: bytes,
                      connect_timeout: float) -> Response:
        """Send a request; its response once the head is in. OSError (and TimeoutError for
        `connect_timeout`) when the upstream cannot be reached, HTTPError when it breaks."""
        head = _head(target, method, headers, len(body))
        conn = await self._acquire(target, connect_timeout)
        try:
            return await conn.send(head, body, method == "HEAD")
        except BaseException:
            conn.close()   # also when cancelled: the upstream sees the request go
            raise

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        for conn in list(self._in_use):
            conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- connections

    async def _acquire(self, target: Target, connect_timeout: float) -> Connection:
        key = target.key
        while True:
            idle = self._idle.get(key)
            now = 0.0
            while idle:
                conn = idle.pop()
                if not now:
                    now = self.loop.time()
                if conn.stale(now):
                    conn.close()
                    continue
                self._take(conn)
                return conn
            if self._has_room(key):
                break
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_one()   # woken, then cancelled: pass the turn on
                raise
        conn = Connection(self, target)
        self._take(conn)   # counts against the limit while it connects
        try:
            await self._connect(conn, target, connect_timeout)
        except BaseException:
            self._forget(conn)
            raise
        return conn

    async def _connect(self, conn: Connection, target: Target, timeout: float) -> None:
        loop = self.loop
        tls: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            # uvloop's create_connection tries addresses one by one: a dead IPv6 route would
            # take the whole timeout. Happy Eyeballs (RFC 8305) as aiohttp does it.
            sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25,
                                                           interleave=1)
            try:
                await loop.create_connection(lambda: cast(asyncio.Protocol, conn), sock=sock,
                                             ssl=tls,
                                             server_hostname=target.host if tls else None)
            except BaseException:
                sock.close()
                raise

    def _has_room(self, key: tuple[str, int, bool]) -> bool:
        if self.limit and len(self._in_use) >= self.limit:
            return False
        return not (self.limit_per_host
                    and self._in_use_per_key.get(key, 0) >= self.limit_per_host)

    def _take(self, conn: Connection) -> None:
        self._in_use.add(conn)
        self._in_use_per_key[conn.key] = self._in_use_per_key.get(conn.key, 0) + 1

    def _give_back(self, conn: Connection) -> bool:
        """`conn` is no longer in use: a waiter may go. False if it was not in use."""
        if conn not in self._in_use:
            return False
        self._in_use.discard(conn)
        left = self._in_use_per_key[conn.key] - 1
        if left:
            self._in_use_per_key[conn.key] = left
        else:
            del self._in_use_per_key[conn.key]
        self._wake_one()
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, conn: Connection) -> None:
        """A response is complete and its connection reusable."""
        if not self._give_back(conn):
            return
        loop = self.loop
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(KEEPALIVE, self._sweep)

    def _forget(self, conn: Connection) -> None:
        """A connection closed (by either side)."""
        if not self._give_back(conn):
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle past KEEPALIVE; look again while any are left."""
        self._sweeper = None
        now = self.loop.time()
        for key, conns in list(self._idle.items()):
            keep = []
            for conn in conns:
                if conn.stale(now):
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self.loop.call_later(KEEPALIVE, self._sweep)


def _head(target: Target, method: str, headers: dict[str, str], length: int) -> bytes:
    """The request's head. A header value with CR or LF is refused: it would split the head."""
    parts = [f"{method} {target.path} HTTP/1.1\r\n"]
    names = set()
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-length" or lower == "transfer-encoding":
            continue   # the body is framed here
        names.add(lower)
        parts.append(f"{name}: {value}\r\n")
    if "host" not in names:
        parts.append(target.host_line)
    for name, line in _DEFAULTS:
        if name not in names:
            parts.append(line)
    parts.append(f"Content-Length: {length}\r\n\r\n")
    text = "".join(parts)
    if text.count("\n") != len(parts) + 1 or text.count("\r") != len(parts) + 1:
        raise ValueError("a request header's name or value contains CR or LF")
    return text.encode()
