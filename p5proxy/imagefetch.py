"""Fetching images given by URL, for upstreams that only take inline image bytes.

Off unless a provider says `fetch_images: true` (or a mapping of the settings below). The
gateway otherwise never fetches a URL from a request: image URLs go upstream as URLs.

When on, only public addresses are fetched: loopback, private, link-local (cloud metadata at
169.254.169.254 included), shared, reserved and multicast addresses are refused, for the first
URL and after every redirect. Names are checked as they resolve, inside the connection itself
(a resolver that refuses), so a name cannot resolve to a public address for the check and a
private one for the connection. `allow_hosts` lists host names or addresses that may be fetched
anyway (an internal image store).
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .canonical import ChatRequest, ImagePart, Message, ToolResultPart
from .errors import ConfigError, InvalidRequest

__all__ = ["FetchSettings", "ImageFetcher", "parse_settings", "refusal", "inline_images"]

_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_MAX_HOPS = 5


@dataclass(frozen=True, slots=True)
class FetchSettings:
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0
    allow_hosts: frozenset[str] = field(default_factory=frozenset)


def parse_settings(value: Any, where: str) -> FetchSettings | None:
    """A provider's `fetch_images` option: false/unset, true, or {max_bytes, timeout,
    allow_hosts}."""
    if value is None or value is False:
        return None
    if value is True:
        return FetchSettings()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be true, false or a mapping "
                          "(max_bytes, timeout, allow_hosts)")
    problems = [f"{where}.{k}: unknown setting (known: allow_hosts, max_bytes, timeout)"
                for k in value if k not in ("max_bytes", "timeout", "allow_hosts")]
    d = FetchSettings()
    try:
        max_bytes = int(value.get("max_bytes", d.max_bytes))
        timeout = float(value.get("timeout", d.timeout))
    except (TypeError, ValueError):
        problems.append(f"{where}: max_bytes and timeout must be numbers")
        max_bytes, timeout = d.max_bytes, d.timeout
    hosts = value.get("allow_hosts") or []
    if not isinstance(hosts, list):
        problems.append(f"{where}.allow_hosts: must be a list of host names or addresses")
        hosts = []
    if problems:
        raise ConfigError(problems)
    return FetchSettings(max_bytes, timeout, frozenset(str(h).lower() for h in hosts))


def refusal(address: str) -> str | None:
    """Why an address may not be fetched, or None for a public one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


class _Refused(OSError):
    pass


class _PublicResolver(AbstractResolver):
    """Resolves as usual, then refuses names with any non-public address."""

    def __init__(self, allow: frozenset[str]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow = allow

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() not in self._allow:
            for result in results:
                why = refusal(result["host"])
                if why:
                    raise _Refused(f"{host} resolves to {why}")
        return results

    async def close(self) -> None:
        await self._inner.close()


class ImageFetcher:
    """One session per distinct `allow_hosts`, created on first use, never through a proxy."""

    def __init__(self) -> None:
        self._sessions: dict[frozenset[str], aiohttp.ClientSession] = {}

    def _session(self, allow: frozenset[str]) -> aiohttp.ClientSession:
        session = self._sessions.get(allow)
        if session is None:
            connector = aiohttp.TCPConnector(resolver=_PublicResolver(allow), use_dns_cache=False,
                                             limit=20)
            session = aiohttp.ClientSession(connector=connector, trust_env=False)
            self._sessions[allow] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def fetch(self, url: str, settings: FetchSettings, param: str) -> tuple[str, str]:
        """(media type, base64 data) of the image at `url`; InvalidRequest (400) otherwise."""
        session = self._session(settings.allow_hosts)
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        for _ in range(_MAX_HOPS + 1):
            _check_url(url, settings, param)
            try:
                async with session.get(url, allow_redirects=False, timeout=timeout) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise _fail(param, f"fetching the image at {url} answered HTTP "
                                    f"{resp.status}")
                    media = resp.content_type
                    if not media.startswith("image/"):
                        raise _fail(param, f"{url} is not an image ({media})")
                    data = await _read_capped(resp, settings.max_bytes, param)
                    return media, base64.b64encode(data).decode()
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Refused):
                    raise _fail(param, f"refused to fetch {url}: {exc.os_error}") from None
                raise _fail(param, f"cannot fetch the image at {url}: {exc}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _fail(param, f"cannot fetch the image at {url}: "
                            f"{exc or 'timed out'}") from None
        raise _fail(param, f"too many redirects fetching the image ({_MAX_HOPS})")


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _check_url(url: str, settings: FetchSettings, param: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(param, f"refused to fetch {url!r}: only http and https URLs")
    host = parts.hostname.lower()
    if host in settings.allow_hosts:
        return
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return   # a name: checked as it resolves (_PublicResolver)
    why = refusal(host)
    if why:
        raise _fail(param, f"refused to fetch {url}: {host} is {why}")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, param: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise _fail(param, f"the image is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise _fail(param, f"the image is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def inline_images(req: ChatRequest, fetcher: ImageFetcher, settings: FetchSettings,
                        fetched: dict[str, tuple[str, str]]) -> None:
    """Replace every image given by http(s) URL with its bytes (`fetched` remembers them for
    the request's retries). The request is rebuilt from its parts afterwards (`rewritten`)."""
    changed = False
    messages: list[Message] = []
    for i, msg in enumerate(req.messages):
        parts = []
        for j, part in enumerate(msg.parts):
            new = await _inline(part, fetcher, settings, fetched, f"messages.{i}.content.{j}")
            changed = changed or new is not part
            parts.append(new)
        messages.append(Message(msg.role, parts) if changed else msg)
    if changed:
        req.messages = messages
        req.rewritten = True


async def _inline(part: Any, fetcher: ImageFetcher, settings: FetchSettings,
                  fetched: dict[str, tuple[str, str]], param: str) -> Any:
    if isinstance(part, ImagePart) and part.data is None and part.url \
            and not part.url.startswith("data:"):
        if part.url not in fetched:
            fetched[part.url] = await fetcher.fetch(part.url, settings, param)
        media, data = fetched[part.url]
        return ImagePart(media_type=media, data=data, meta=part.meta)
    if isinstance(part, ToolResultPart) and any(isinstance(p, ImagePart) for p in part.content):
        inner = [await _inline(p, fetcher, settings, fetched, param) for p in part.content]
        if any(a is not b for a, b in zip(inner, part.content, strict=True)):
            return dataclasses.replace(part, content=inner)
    return part
