"""Who may see an admin page: the disabled check (404), the session cookie, CSRF on POST, and
the security headers of every admin response."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from ..appkeys import STATE
from ..config import AdminConfig
from .auth import COOKIE, check_csrf, csrf_token, read_session
from .html import e, page

__all__ = ["Session", "admin_view", "html_response", "enabled_admin", "safe_next", "login_form",
           "public_page"]


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str     # for the forms of this page
    nonce: str    # for the page's inline script (Content-Security-Policy)


View = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def html_response(text: str, *, status: int = 200, nonce: str = "") -> web.Response:
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
           "base-uri 'none'")
    return web.Response(text=text, status=status, content_type="text/html", headers={
        "Content-Security-Policy": csp, "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store"})


def public_page(title: str, body: str, *, status: int = 200) -> web.Response:
    """A page for someone not logged in (no navigation)."""
    nonce = secrets.token_urlsafe(12)
    return html_response(page(title, body, nonce=nonce), status=status, nonce=nonce)


def enabled_admin(request: web.Request) -> AdminConfig:
    """The admin settings; 404 when no admin key is configured (the page does not exist)."""
    admin = request.app[STATE].config.admin
    if not admin.enabled:
        raise web.HTTPNotFound()
    return admin


def safe_next(value: str | None) -> str:
    """A redirect target after login: only admin pages of this gateway."""
    if value and (value == "/admin" or value.startswith("/admin/")) and "//" not in value \
            and "\\" not in value:
        return value
    return "/admin"


def admin_view(handler: View) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        admin = enabled_admin(request)
        sid = read_session(admin, request.cookies.get(COOKIE))
        nonce = secrets.token_urlsafe(12)
        if sid is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther("/admin/login?next=" + quote(request.path_qs, safe=""))
            return public_page("Not logged in", '<p class="err">Your session has ended. '
                               '<a href="/admin/login">Log in</a> again.</p>', status=401)
        session = Session(sid, csrf_token(admin, sid), nonce)
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf")
            if not check_csrf(admin, sid, token if isinstance(token, str) else None):
                return html_response(page("Forbidden", '<p class="err">Missing or invalid CSRF '
                                          'token: reload the page and try again.</p>',
                                          csrf=session.csrf, nonce=nonce), status=403,
                                     nonce=nonce)
        return await handler(request, session)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def login_form(message: str = "", next_url: str = "/admin") -> str:
    note = f'<p class="err">{e(message)}</p>' if message else ""
    return (f'{note}<form method="post" action="/admin/login" id="login">'
            f'<input type="hidden" name="next" value="{e(safe_next(next_url))}">'
            '<label>Admin key <input type="password" name="key" autocomplete="current-password" '
            'autofocus required size="40"></label> <button type="submit">Log in</button></form>'
            '<p class="muted">The admin key is <code>admin.key</code> (or '
            '<code>admin.key_sha256</code>, or <code>P5PROXY_ADMIN_KEY</code>); client keys '
            'do not open this page.</p>')
