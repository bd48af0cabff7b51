"""Which outbound proxy an upstream is reached through, decided once per provider.

In order: the provider's `proxy` (a URL, or `false` for a direct connection); then
`upstream_proxy` (`UPSTREAM_PROXY_URL`) unless `NO_PROXY` names the host; then the standard
`HTTPS_PROXY` / `HTTP_PROXY` (`ALL_PROXY`) for the URL's scheme, honouring `NO_PROXY`, and never
for loopback hosts (`localhost`, 127.0.0.0/8, ::1), as Go and curl-compatible tools do.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ProxyChoice", "choose_proxy", "strip_credentials"]


@dataclass(frozen=True, slots=True)
class ProxyChoice:
    url: str | None      # None: direct
    source: str          # "provider", "UPSTREAM_PROXY_URL", "HTTPS_PROXY"..., "NO_PROXY", ""

    def describe(self) -> dict[str, Any] | None:
        """For /health: where the proxy is, never who logs into it."""
        if self.url is None:
            return None
        return {"url": strip_credentials(self.url), "from": self.source,
                "credentials": bool(urlsplit(self.url).username)}


def strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env(env: Mapping[str, str]) -> dict[str, str]:
    """`{scheme: proxy}` from *_PROXY variables (`no` for NO_PROXY); lower case wins."""
    proxies: dict[str, str] = {}
    for lower in (False, True):
        for name, value in env.items():
            if value and name.lower().endswith("_proxy") and (name == name.lower()) == lower:
                proxies[name.lower()[:-6]] = value
    return proxies


def _bypassed(host: str, port: int | None, proxies: dict[str, str]) -> bool:
    if "no" not in proxies:
        return False
    target = f"{host}:{port}" if port else host
    bypass = urllib.request.proxy_bypass_environment   # type: ignore[attr-defined]
    return bool(bypass(target, proxies))


def choose_proxy(url: str, *, provider_proxy: str | None, upstream_proxy: str | None,
                 env: Mapping[str, str] | None = None) -> ProxyChoice:
    if provider_proxy is not None:   # "" is an explicit direct connection
        return ProxyChoice(provider_proxy or None, "provider" if provider_proxy else "")
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxies = _env(os.environ if env is None else env)
    if upstream_proxy:
        if _bypassed(host, parts.port, proxies):
            return ProxyChoice(None, "NO_PROXY")
        return ProxyChoice(upstream_proxy, "UPSTREAM_PROXY_URL")
    if _is_loopback(host):
        return ProxyChoice(None, "")
    chosen = proxies.get(parts.scheme) or proxies.get("all")
    if not chosen:
        return ProxyChoice(None, "")
    if _bypassed(host, parts.port, proxies):
        return ProxyChoice(None, "NO_PROXY")
    name = f"{parts.scheme.upper()}_PROXY" if proxies.get(parts.scheme) else "ALL_PROXY"
    return ProxyChoice(chosen, name)
