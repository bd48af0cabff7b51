"""The aiohttp application: configuration, plugins, router and upstream client wired once."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pluggy
from aiohttp import web

from .appkeys import STATE
from .config import Config
from .middleware import gateway_middleware
from .plugins import Registry, build_registry, make_plugin_manager
from .routes import anthropic, info, openai
from .routing import Router
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


def create_app(config: Config, *, pm: pluggy.PluginManager | None = None) -> web.Application:
    """Build the application. Raises ConfigError / PluginError for problems found at start-up.
    Pass `pm` to control plugin loading (tests pass one without entry-point plugins)."""
    if pm is None:
        pm = make_plugin_manager(config)
    registry = build_registry(pm, config)
    state = GatewayState(config, pm, registry, Router(config, pm, registry),
                         UpstreamClient(config.server))
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[gateway_middleware])
    app[STATE] = state
    app.router.add_routes(anthropic.routes)
    app.router.add_routes(openai.routes)
    app.router.add_routes(info.routes)
    pm.hook.p5proxy_register_routes(app=app, config=config)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.upstream.start()
    for result in state.pm.hook.p5proxy_startup(app=app, config=state.config):
        if inspect.isawaitable(result):
            await result
    yield
    await state.upstream.close()
