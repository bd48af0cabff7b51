"""Admin pages that do something: log in and out, the configuration with its reload button, and
the "try it" form."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import yaml
from aiohttp import web

from ..appkeys import STATE
from ..clientkeys import ClientKey
from ..reload import ReloadResult, reload_everywhere, reload_state
from .auth import COOKIE, check_key, new_session, read_session
from .guard import (Session, admin_view, enabled_admin, html_response, login_form,
                    public_page, safe_next)
from .html import e, fmt_num, fmt_time, page, table
from .mask import config_view
from .tryit import PROTOCOLS, TryResult, try_model

__all__ = ["login_page", "login", "logout", "config_page", "reload", "try_page", "try_run"]

_FAILED_LOGIN_DELAY = 0.5   # seconds: slows down guessing


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host


def _over_https(request: web.Request) -> bool:
    """HTTPS to the gateway, or to a proxy on this machine (nginx) that says so."""
    if request.secure:
        return True
    peer = request.remote or ""
    local = peer == "::1" or peer.startswith("127.")
    return local and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def login_page(request: web.Request) -> web.Response:
    admin = enabled_admin(request)
    next_url = request.query.get("next", "/admin")
    if read_session(admin, request.cookies.get(COOKIE)) is not None:
        raise web.HTTPSeeOther(safe_next(next_url))
    return public_page("Log in", login_form(next_url=next_url))


async def login(request: web.Request) -> web.Response:
    admin = enabled_admin(request)
    form = await request.post()
    next_url = str(form.get("next") or "/admin")
    if not _same_origin(request):
        return public_page("Log in", login_form("Cross-site login refused.", next_url),
                           status=403)
    key = form.get("key")
    if not isinstance(key, str) or not check_key(admin, key):
        await asyncio.sleep(_FAILED_LOGIN_DELAY)
        return public_page("Log in", login_form("Wrong admin key.", next_url), status=401)
    resp = web.HTTPSeeOther(safe_next(next_url))
    resp.set_cookie(COOKIE, new_session(admin), max_age=int(admin.session_secs), path="/admin",
                    httponly=True, samesite="Strict", secure=_over_https(request))
    raise resp


@admin_view
async def logout(request: web.Request, session: Session) -> web.Response:
    resp = web.HTTPSeeOther("/admin/login")
    resp.del_cookie(COOKIE, path="/admin")
    raise resp


def _reload_rows(results: list[ReloadResult]) -> str:
    rows = []
    for r in reversed(results):
        detail = "<br>".join(e(p) for p in (r.changes if r.ok else r.problems))
        rows.append((e(fmt_time(r.at)), e(r.trigger),
                     '<span class="ok">applied</span>' if r.ok else
                     '<span class="bad">rejected</span>', detail))
    return table(("time (UTC)", "trigger", "result", "details"), rows, attrs='id="reloads"')


def _config_body(request: web.Request, session: Session, result: ReloadResult | None) -> str:
    state = request.app[STATE]
    banner = ""
    if result is not None and result.ok:
        banner = ('<div class="notice" id="reload-result"><b>Configuration reloaded.</b><br>'
                  + "<br>".join(e(c) for c in result.changes) + "</div>")
    elif result is not None:
        banner = ('<div class="err" id="reload-result"><b>The file was rejected; the running '
                  'configuration stays in force.</b><ul>'
                  + "".join(f"<li>{e(p)}</li>" for p in result.problems) + "</ul></div>")
    text = yaml.safe_dump(config_view(state.config), sort_keys=False, allow_unicode=True)
    reload_form = (f'<form method="post" action="/admin/reload" data-confirm="Reload the '
                   f'configuration from {e(state.config.source)}?" data-busy="Reloading…">'
                   f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
                   '<button type="submit" id="reload">Reload configuration</button></form>')
    history = ("<h2>Reloads</h2>" + _reload_rows(state.reloads)) if state.reloads else ""
    return (f'{banner}<p>Source: <code>{e(state.config.source)}</code>. Secrets are masked. '
            'Reloading reads the file again (also done by <code>kill -HUP</code>); '
            '<code>server:</code>, <code>logs:</code> and <code>plugins_dir</code> need a '
            'restart.</p>'
            f'{reload_form}<pre id="config">{e(text)}</pre>{history}')


@admin_view
async def config_page(request: web.Request, session: Session) -> web.Response:
    return html_response(page("Configuration", _config_body(request, session, None),
                              active="config", csrf=session.csrf, nonce=session.nonce),
                         nonce=session.nonce)


@admin_view
async def reload(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    result = await reload_state(state, trigger="admin")
    if result.ok:
        reload_everywhere(state)   # the other --workers workers
    return html_response(page("Configuration", _config_body(request, session, result),
                              active="config", csrf=session.csrf, nonce=session.nonce),
                         status=200 if result.ok else 422, nonce=session.nonce)


def _try_form(request: web.Request, session: Session, values: dict[str, Any]) -> str:
    names = request.app[STATE].router.model_names()
    if values["model"] and values["model"] not in names:
        names = [values["model"], *names]
    models = "".join(f'<option{" selected" if n == values["model"] else ""}>{e(n)}</option>'
                     for n in names)
    protocols = "".join(f'<option{" selected" if p == values["protocol"] else ""}>{e(p)}'
                        '</option>' for p in PROTOCOLS)
    return ('<form method="post" action="/admin/try" id="try" data-busy="Waiting…">'
            f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
            f'<p><label>Model <select name="model">{models}</select></label>'
            f'<label>or another name <input name="other_model" size="20"></label>'
            f'<label>Protocol <select name="protocol">{protocols}</select></label>'
            f'<label>max_tokens <input name="max_tokens" type="number" min="1" max="4096" '
            f'value="{e(values["max_tokens"])}"></label>'
            f'<label><input type="checkbox" name="stream" value="1"'
            f'{" checked" if values["stream"] else ""}> stream</label></p>'
            f'<p><textarea name="prompt" rows="3">{e(values["prompt"])}</textarea></p>'
            '<button type="submit">Send</button></form>')


def _try_result(r: TryResult) -> str:
    rows = [("result", '<span class="ok">ok</span>' if r.ok else '<span class="bad">failed</span>'),
            ("HTTP status", e(r.status)), ("request id", (
                f'<a href="/admin/log/{e(r.request_id)}">{e(r.request_id)}</a>'
                if r.request_id else "")),
            ("time to first token", e(f"{fmt_num(r.ttft_ms, 0)} ms" if r.ttft_ms else "–")),
            ("total time", f'<span id="try-total">{e(fmt_num(r.total_ms, 0))} ms</span>'),
            ("gateway overhead", e(f"{r.overhead_ms} ms" if r.overhead_ms else "–")),
            ("stop reason", e(r.stop_reason)),
            ("usage", e(orjson.dumps(r.usage).decode() if r.usage else ""))]
    out = '<h2>Result</h2>' + table(("", ""), rows, attrs='id="try-result"')
    if r.thinking:
        out += f'<h3>Thinking</h3><pre id="try-thinking">{e(r.thinking)}</pre>'
    out += f'<h3>Answer</h3><pre id="try-answer">{e(r.answer)}</pre>'
    if r.error:
        out += f'<h3>Error</h3><pre class="err" id="try-error">{e(r.error)}</pre>'
    return out


_DEFAULTS = {"model": "", "protocol": "openai", "max_tokens": 64, "stream": True,
             "prompt": "Say hello in five words."}


@admin_view
async def try_page(request: web.Request, session: Session) -> web.Response:
    values = dict(_DEFAULTS)
    names = request.app[STATE].router.model_names()
    values["model"] = names[0] if names else ""
    return html_response(page("Try it", _try_form(request, session, values), active="try",
                              csrf=session.csrf, nonce=session.nonce), nonce=session.nonce)


def _own_url(request: web.Request) -> str:
    """The gateway's own listener: the address this admin request arrived on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
    else:
        server = request.app[STATE].config.server
        host, port = server.host, server.port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@admin_view
async def try_run(request: web.Request, session: Session) -> web.Response:
    form = await request.post()
    other = str(form.get("other_model") or "").strip()
    values: dict[str, Any] = {
        "model": other or str(form.get("model") or "").strip(),
        "protocol": str(form.get("protocol") or "openai"),
        "stream": form.get("stream") == "1",
        "prompt": str(form.get("prompt") or "").strip() or _DEFAULTS["prompt"]}
    try:
        values["max_tokens"] = min(4096, max(1, int(str(form.get("max_tokens") or 64))))
    except ValueError:
        values["max_tokens"] = 64
    if values["protocol"] not in PROTOCOLS:
        values["protocol"] = "openai"
    body = _try_form(request, session, values)
    if not values["model"]:
        body += '<p class="err">Choose a model.</p>'
        status = 400
    else:
        # the first key given in plain text that may use the model (hashed keys cannot be sent)
        keys = [k.key for k in request.app[STATE].config.auth_keys
                if k.key and ClientKey(k).allows(values["model"])]
        started = time.time()
        result = await try_model(_own_url(request), protocol=values["protocol"],
                                 model=values["model"], prompt=values["prompt"],
                                 max_tokens=values["max_tokens"], stream=values["stream"],
                                 client_key=keys[0] if keys else None)
        body += _try_result(result) + f'<p class="muted">Sent {e(fmt_time(started))} UTC.</p>'
        status = 200
    return html_response(page("Try it", body, active="try", csrf=session.csrf,
                              nonce=session.nonce), status=status, nonce=session.nonce)
