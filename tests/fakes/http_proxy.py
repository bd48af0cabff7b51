"""A tiny forward HTTP proxy on a loopback port that counts what passes through it.

Absolute-form requests (`POST http://host:port/path HTTP/1.1`, what a client sends for http://
URLs through a proxy) are forwarded to 127.0.0.1 on the URL's port, whatever the host name (so
that tests can use names that resolve nowhere), with `Connection: close`; `CONNECT host:port`
opens a tunnel the same way. Every request is recorded with its headers (Proxy-Authorization
included).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from .raw_server import RawServer

__all__ = ["CountingProxy", "ProxiedRequest"]


@dataclass
class ProxiedRequest:
    method: str
    target: str                 # the absolute URL, or host:port for CONNECT
    headers: dict[str, str]     # lower-case names


class CountingProxy(RawServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ProxiedRequest] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, version = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        self.requests.append(ProxiedRequest(method, target, headers))
        if method == "CONNECT":
            port = int(target.rsplit(":", 1)[1])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            kept = [line for line in head[1:] if line and not line.lower().startswith(
                ("proxy-", "connection:"))]
            up_writer.write(f"{method} {path} {version}\r\n".encode() +
                            "\r\n".join([*kept, "Connection: close", "", ""]).encode() +
                            await reader.readexactly(int(headers.get("content-length", "0"))))
            # one request per connection: the client must not reuse it for another
            reply = await up_reader.readuntil(b"\r\n\r\n")
            writer.write(reply[:-2] + b"Connection: close\r\n\r\n")
        self._writers.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass
