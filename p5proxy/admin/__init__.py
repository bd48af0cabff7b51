"""The admin page, `/admin`: overview charts, providers and keys, the request log, the live
configuration with a reload button, and a "try it" form.

Server-rendered HTML with a little inline JavaScript (no build step, nothing loaded from
elsewhere). Protected by its own key (`admin.key`, `admin.key_sha256` or `P5PROXY_ADMIN_KEY`);
without one every admin path answers 404. Client keys never open it: the middleware leaves
`/admin` paths to this package, which only accepts its own session cookie.
"""

from __future__ import annotations

from aiohttp import web

from . import actions, pages

__all__ = ["add_admin_routes", "is_admin_path"]


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin", pages.overview)
    r.add_get("/admin/", pages.overview)
    r.add_get("/admin/login", actions.login_page)
    r.add_post("/admin/login", actions.login)
    r.add_post("/admin/logout", actions.logout)
    r.add_get("/admin/providers", pages.providers)
    r.add_get("/admin/log", pages.request_log)
    r.add_get("/admin/log/{request_id}", pages.request_detail)
    r.add_get("/admin/config", actions.config_page)
    r.add_post("/admin/reload", actions.reload)
    r.add_get("/admin/try", actions.try_page)
    r.add_post("/admin/try", actions.try_run)
