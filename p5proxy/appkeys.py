"""Typed application keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import GatewayState
    from .record import RequestRecord

__all__ = ["STATE", "REQUEST_ID", "RECORD", "CLIENT_IP"]

STATE: web.AppKey["GatewayState"] = web.AppKey("p5proxy_state")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("p5proxy_request_id", str)
RECORD: web.RequestKey["RequestRecord"] = web.RequestKey("p5proxy_record")
# The client's address: the socket peer, or the X-Forwarded-For client when the peer is one of
# server.trusted_proxies (p5proxy/forwarded.py). Use it wherever the peer is logged or recorded.
CLIENT_IP: web.RequestKey[str | None] = web.RequestKey("p5proxy_client_ip")
