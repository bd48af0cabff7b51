"""GET /v1/models (both SDK shapes), /health, the root that Claude Code preflights, and the
billing endpoints that one-api / new-api poll on an OpenAI-type channel."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..access import check_model
from ..appkeys import ACCESS, CLIENT, STATE
from ..errors import UnknownModel

__all__ = ["routes"]

routes = web.RouteTableDef()
_CREATED = 1735689600            # a fixed, plausible creation time for configured aliases
_CREATED_AT = "2025-01-01T00:00:00Z"


def _model(name: str) -> dict[str, object]:
    # One superset object satisfies both SDKs' model types.
    return {"id": name, "object": "model", "type": "model", "created": _CREATED,
            "created_at": _CREATED_AT, "display_name": name, "owned_by": "p5proxy"}


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    names = request.app[STATE].router.model_names()
    key = request.get(CLIENT)
    if key is not None and key.models:   # only the models this client key may use
        names = [n for n in names if key.allows(n)]
    data = [_model(n) for n in names]
    if "anthropic-version" in request.headers:
        return web.json_response({"data": data, "has_more": False,
                                  "first_id": names[0] if names else None,
                                  "last_id": names[-1] if names else None})
    return web.json_response({"object": "list", "data": data})


@routes.get("/v1/models/{model_id}")
async def model(request: web.Request) -> web.Response:
    name = request.match_info["model_id"]
    if name not in request.app[STATE].router.model_names():
        raise UnknownModel(f"model {name!r} is not configured", param="model")
    check_model(request, name)
    return web.json_response(_model(name))


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({
        "status": "ok", "version": __version__,
        "providers": state.router.describe(),
        "models": [{"name": m.pattern, "provider": m.provider, "upstream_model": m.model}
                   for m in state.config.models],
        "default_model": state.config.default_model,
        "auth": "keys" if state.config.auth_keys else "open",
        "client_keys": request.app[ACCESS].describe(),
        "redis": state.redis.describe() if state.redis is not None else None,
        "cache": state.cache.describe() if state.cache is not None else {"enabled": False},
    })


# OpenAI's legacy dashboard billing API, as one-api / new-api poll it for an OpenAI-type channel
# (balance = hard_limit_usd - total_usage / 100; a balance <= 0 or an error disables the
# channel). The gateway sets no spending limit and keeps no cost ledger, and says exactly that:
# the "unlimited" amount those front-ends use themselves, and no usage.
UNLIMITED_USD = 100000000.0


@routes.get("/v1/dashboard/billing/subscription")
async def billing_subscription(request: web.Request) -> web.Response:
    return web.json_response({
        "object": "billing_subscription", "has_payment_method": True,
        "soft_limit_usd": UNLIMITED_USD, "hard_limit_usd": UNLIMITED_USD,
        "system_hard_limit_usd": UNLIMITED_USD, "access_until": 0,
        "plan": {"id": "p5proxy", "title": "p5proxy gateway"},
    })


@routes.get("/v1/dashboard/billing/usage")
async def billing_usage(request: web.Request) -> web.Response:
    # start_date / end_date (YYYY-MM-DD) are accepted and not needed: there is nothing to sum.
    return web.json_response({"object": "list", "daily_costs": [], "total_usage": 0.0})


@routes.get("/v1/dashboard/billing/credit_grants")
async def billing_credit_grants(request: web.Request) -> web.Response:
    return web.json_response({"object": "credit_summary", "total_granted": UNLIMITED_USD,
                              "total_used": 0.0, "total_available": UNLIMITED_USD,
                              "grants": {"object": "list", "data": []}})


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    return web.json_response({"name": "p5proxy", "version": __version__, "status": "ok"})


@routes.get("/api/hello")
async def hello(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
