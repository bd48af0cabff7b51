"""The aiohttp application: configuration, plugins, router and upstream client wired once."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pluggy
from aiohttp import web

from . import metrics
from .access import Access
from .admin import add_admin_routes
from .appkeys import ACCESS, STATE
from .config import Config
from .middleware import gateway_middleware
from .plugins import Registry, build_registry, make_plugin_manager
from .reload import ReloadResult
from .reqlog import RequestLog, open_request_log
from .routes import anthropic, info, openai
from .routes import metrics as metrics_routes
from .flight import Flight
from .response_cache import ResponseCache
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
    cache: ResponseCache | None = None   # None: cache disabled
    flights: dict[str, Flight] = field(default_factory=dict)   # answers under way, by cache key
    streams: set[asyncio.Task[Any]] = field(default_factory=set)   # handlers writing a stream
    stopping: bool = False
    # live reload (reload.py): results for the admin page, one reload at a time, and the
    # supervisor to signal under --workers (set by server.py)
    reloads: list[ReloadResult] = field(default_factory=list)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    supervisor_pid: int | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)   # background work, referenced
    # the request log store (reqlog/store.py: query, get, summary, describe); None when
    # `logs.enabled: false`. Created here, opened at startup, flushed and closed at shutdown.
    request_log: RequestLog | None = None

    def swap(self, config: Config, registry: Registry, router: Router) -> Router:
        """Put a new configuration in force at once (no await in between, so no request sees
        half of it); returns the replaced router. Requests that already resolved a Route keep
        it, with its provider and filter objects."""
        previous = self.router
        router.attach_shared(self.redis)   # key cooldowns across instances (and reloads)
        self.config, self.registry, self.router = config, registry, router
        return previous

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


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
    state.router.attach_shared(state.redis)   # key cooldowns across instances
    state.cache = pm.hook.p5proxy_response_cache(config=config, redis=state.redis)
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[gateway_middleware])
    app[STATE] = state
    app[ACCESS] = Access(state)
    if config.logs.enabled:
        state.request_log = open_request_log(config.logs)
    app.router.add_routes(metrics_routes.routes)
    app.router.add_routes(anthropic.routes)
    app.router.add_routes(openai.routes)
    app.router.add_routes(info.routes)
    add_admin_routes(app)
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
    if state.request_log is not None:
        await state.request_log.start()   # a database that is down is retried, never fatal
    for result in state.pm.hook.p5proxy_startup(app=app, config=state.config):
        if inspect.isawaitable(result):
            await result
    yield
    metrics.flush()   # the last requests' counts, before a worker's files are read for good
    if state.cache is not None:
        await state.cache.close()
    await state.upstream.close()
    if state.redis is not None:
        await state.redis.close()
    if state.request_log is not None:
        await state.request_log.close()
