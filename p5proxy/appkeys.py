"""Typed application keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import GatewayState
    from .record import RequestRecord

__all__ = ["STATE", "REQUEST_ID", "RECORD"]

STATE: web.AppKey["GatewayState"] = web.AppKey("p5proxy_state")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("p5proxy_request_id", str)
RECORD: web.RequestKey["RequestRecord"] = web.RequestKey("p5proxy_record")
