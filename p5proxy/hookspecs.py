"""Hook specifications. Hooks run once at start-up and register objects; per-request and
per-chunk work calls those objects, never pluggy.

A firstresult implementation must be a plain `def` (a coroutine is never None, so an async
implementation would always win). Bundled defaults are `trylast`, so installed plugins override.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "p5proxy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def p5proxy_register_providers(register: Callable[[str, Callable[..., Any]], None],
                               config: Any) -> None:
    """Register provider types. Runs at start-up.

    Call ``register(type_name, factory)`` for each type; ``factory(provider_config, config)``
    returns a `p5proxy.Provider`. Rows of ``providers:`` in the configuration name a type with
    ``type:``; one factory serves every row of its type.
    """


@hookspec
def p5proxy_register_filters(register: Callable[[str, Callable[..., Any]], None],
                             config: Any) -> None:
    """Register output filters. Runs at start-up.

    Call ``register(name, factory)``; ``factory(config)`` returns a `p5proxy.Filter`. A model
    lists the filters it uses, in order, under ``filters:``.
    """


@hookspec(firstresult=True)
def p5proxy_resolve_route(model: str, config: Any) -> Any:
    """Map a client model name to a `p5proxy.config.ModelConfig` (provider name and upstream
    model), or return None to let the next implementation decide.

    Called the first time a model name is seen; the answer is remembered. The bundled
    implementation (trylast) uses ``models:`` (exact names, then globs) and ``default_model``.
    """


@hookspec(firstresult=True)
def p5proxy_response_cache(config: Any, redis: Any) -> Any:
    """Return the `p5proxy.response_cache.ResponseCache` to use, or None for the next
    implementation. Runs at start-up. ``redis`` is the shared `SharedRedis` or None.

    The bundled implementation (trylast) keeps entries in memory and, with Redis configured,
    in Redis too; it returns None when ``cache.enabled`` is false (no cache, no de-duplication).
    """


@hookspec
def p5proxy_register_routes(app: Any, config: Any) -> None:
    """Add extra HTTP routes to the aiohttp application (``app.router.add_get(...)``).
    Runs at start-up, before the server accepts connections."""


@hookspec
def p5proxy_startup(app: Any, config: Any) -> Any:
    """Called once the application starts, with its upstream session ready. May return an
    awaitable, which the host awaits (open connections, warm caches...)."""
