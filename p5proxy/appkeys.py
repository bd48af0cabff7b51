"""Typed application keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import GatewayState

__all__ = ["STATE", "REQUEST_ID"]

STATE: web.AppKey["GatewayState"] = web.AppKey("p5proxy_state")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("p5proxy_request_id", str)
