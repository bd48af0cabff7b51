"""Typed application and request keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from aiohttp import web

if TYPE_CHECKING:
    from .access import Access
    from .app import GatewayState
    from .clientkeys import ClientKey
    from .record import RequestRecord

__all__ = ["STATE", "REQUEST_ID", "ACCESS", "CLIENT", "RECORD", "CLIENT_IP", "BODY"]

STATE: web.AppKey["GatewayState"] = web.AppKey("p5proxy_state")
ACCESS: web.AppKey["Access"] = web.AppKey("p5proxy_access")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("p5proxy_request_id", str)
# The authenticated client key (its `.id` is stable and not secret); None when auth is open.
CLIENT: web.RequestKey[Optional["ClientKey"]] = web.RequestKey("p5proxy_client")
RECORD: web.RequestKey["RequestRecord"] = web.RequestKey("p5proxy_record")
# The client's address: the socket peer, or the X-Forwarded-For client when the peer is one of
# server.trusted_proxies (p5proxy/forwarded.py). Use it wherever the peer is logged or recorded.
CLIENT_IP: web.RequestKey[str | None] = web.RequestKey("p5proxy_client_ip")
# The request body, read by the middleware within the size and time limits (p5proxy/inputs.py).
BODY: web.RequestKey[bytes] = web.RequestKey("p5proxy_body", bytes)
