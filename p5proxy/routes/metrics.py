"""GET /metrics: Prometheus text format (see p5proxy/metrics.py for the series).

Access: with `metrics.key` or an admin key configured, only `Authorization: Bearer <that key>`
is accepted (client keys are not); otherwise /metrics is guarded like the API (a client key
when `auth.keys` is set, open when it is not).
"""

from __future__ import annotations

from aiohttp import web

from .. import metrics
from ..appkeys import STATE
from ..errors import AuthError

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    config = request.app[STATE].config
    if not config.metrics.enabled:
        raise web.HTTPNotFound()
    if metrics.keys(config):
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if not metrics.authorized(config, token):
            raise AuthError("/metrics needs Authorization: Bearer <metrics.key or admin key>")
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})
