"""The aiohttp application: configuration, plugins, router and upstream client wired once."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pluggy
from aiohttp import web

from .access import Access
from .appkeys import ACCESS, STATE
from .config import Config
from .middleware import gateway_middleware
from .plugins import Registry, build_registry, make_plugin_manager
from .routes import anthropic, info, openai
from .routing import Router
from .shared_redis import SharedRedis
from .upstream import UpstreamClient

__all__ = ["create_app", "GatewayState"]

log = logging.getLogger("p5proxy")


@dataclass
class GatewayState:
    config: Config
    pm: pluggy.PluginManager
    registry: Registry
    router: Router
    upstream: UpstreamClient
    redis: SharedRedis | None = None   # shared by instances; None when not configured
    streams: set[asyncio.Task[Any]] = field(default_factory=set)   # handlers writing a stream
    stopping: bool = False


def create_app(config: Config, *, pm: pluggy.PluginManager | None = None) -> web.Application:
    """Build the application. Raises ConfigError / PluginError for problems found at start-up.
    Pass `pm` to control plugin loading (tests pass one without entry-point plugins)."""
    if pm is None:
        pm = make_plugin_manager(config)
    registry = build_registry(pm, config)
    state = GatewayState(config, pm, registry, Router(config, pm, registry),
                         UpstreamClient(config.server))
    if config.shared_redis_url:
        state.redis = SharedRedis(config.shared_redis_url, prefix=config.redis.prefix,
                                  op_timeout=config.redis.op_timeout)
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[gateway_middleware])
    app[STATE] = state
    app[ACCESS] = Access(config, state)
    app.router.add_routes(anthropic.routes)
    app.router.add_routes(openai.routes)
    app.router.add_routes(info.routes)
    pm.hook.p5proxy_register_routes(app=app, config=config)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_streams)
    return app


async def _end_streams(app: web.Application) -> None:
    """On shutdown (listeners already closed): give open streams the grace period to finish,
    then cancel them; each ends with the protocol's error event (see routes/chat.py)."""
    state = app[STATE]
    state.stopping = True
    if state.streams:
        await asyncio.wait(set(state.streams), timeout=state.config.server.grace_secs)
    left = set(state.streams)
    for task in left:
        task.cancel("gateway shutting down")
    if left:
        await asyncio.wait(left, timeout=2)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.upstream.start()
    for result in state.pm.hook.p5proxy_startup(app=app, config=state.config):
        if inspect.isawaitable(result):
            await result
    yield
    await state.upstream.close()
    if state.redis is not None:
        await state.redis.close()
