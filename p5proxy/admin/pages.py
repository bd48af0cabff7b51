"""Read-only admin pages: overview charts, providers and keys, the request log and its details.

Numbers come from the request log store (`state.request_log`, see p5proxy/reqlog), so with a
shared PostgreSQL database they cover every instance; provider details come from the live
router (`Provider.describe()`).
"""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..appkeys import STATE
from ..errors import P5ProxyError
from ..routing import tool_mode
from .guard import Session, admin_view, html_response
from .html import bar_chart, e, fmt_num, fmt_time, line_chart, page, table
from .mask import mask_secret, mask_text, masked

__all__ = ["overview", "providers", "request_log", "request_detail", "WINDOWS"]

# window name -> (seconds, buckets)
WINDOWS = {"15m": (900, 15), "1h": (3600, 60), "24h": (86400, 96)}
PAGE_SIZE = 50
_STATUSES = ("", "ok", "error", "2xx", "4xx", "5xx")


def _store(request: web.Request) -> Any:
    return getattr(request.app[STATE], "request_log", None)


def _no_store() -> str:
    return ('<p class="err">The request log is off (see <code>logs:</code> in the '
            'configuration), so there is nothing to show here.</p>')


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _tile(tile_id: str, label: str, value: str) -> str:
    return f'<div class="tile" id="tile-{e(tile_id)}">{e(label)}<b>{e(value)}</b></div>'


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@admin_view
async def overview(request: web.Request, session: Session) -> web.Response:
    window = request.query.get("window", "1h")
    if window not in WINDOWS:
        window = "1h"
    secs, buckets = WINDOWS[window]
    picker = " ".join(f'<a href="/admin?window={w}"{" class=on" if w == window else ""}>'
                      f'{"<b>" + w + "</b>" if w == window else w}</a>' for w in WINDOWS)
    head = (f'<p>Window: {picker} &nbsp; <label><input type="checkbox" id="autorefresh"> '
            'refresh every 10 s</label></p>')
    store = _store(request)
    if store is None:
        return _page("Overview", head + _no_store(), "overview", session)
    try:
        s = await store.summary(window_secs=secs, buckets=buckets)
    except P5ProxyError as exc:
        return _page("Overview", head + f'<p class="err">{e(exc.message)}</p>', "overview",
                     session, status=503)
    t, series = s["totals"], s["series"]
    per_min = s["bucket_secs"] / 60 or 1
    xs = [b["ts"] for b in series]
    tiles = "".join((
        _tile("requests", "Requests", fmt_num(t["requests"])),
        _tile("rpm", "Requests / min", fmt_num(t["requests"] / (secs / 60), 2)),
        _tile("success", "Success rate", _pct(t["success_rate"])),
        _tile("latency", "Latency p50 / p95",
              f"{fmt_num(t['latency_p50_ms'], 0)} / {fmt_num(t['latency_p95_ms'], 0)} ms"),
        _tile("ttft", "Time to first token p50 / p95",
              f"{fmt_num(t['ttft_p50_ms'], 0)} / {fmt_num(t['ttft_p95_ms'], 0)} ms"),
        _tile("tokens", "Tokens in / out / cached",
              f"{fmt_num(t['input_tokens'])} / {fmt_num(t['output_tokens'])} / "
              f"{fmt_num(t['cached_tokens'])}"),
        _tile("cache", "Cache hit rate", _pct(t["cache_hit_rate"])),
    ))
    charts = "".join((
        bar_chart("Requests per minute", xs, [b["requests"] / per_min for b in series],
                  chart_id="chart-rpm", label="requests / min"),
        line_chart("Success rate", xs, [("success %", [
            None if not b["requests"] else 100 * (b["requests"] - b["errors"]) / b["requests"]
            for b in series])], unit="%", top=100, chart_id="chart-success"),
        line_chart("Latency", xs, [("p50", [b["latency_p50_ms"] for b in series]),
                                   ("p95", [b["latency_p95_ms"] for b in series])],
                   unit=" ms", chart_id="chart-latency"),
        line_chart("Time to first token", xs, [("p50", [b["ttft_p50_ms"] for b in series]),
                                               ("p95", [b["ttft_p95_ms"] for b in series])],
                   unit=" ms", chart_id="chart-ttft"),
        line_chart("Tokens per minute", xs, [
            ("input", [b["input_tokens"] / per_min for b in series]),
            ("output", [b["output_tokens"] / per_min for b in series]),
            ("cached", [b["cached_tokens"] / per_min for b in series])], chart_id="chart-tokens"),
        line_chart("Cache hit rate", xs, [("hits %", [
            None if r is None else 100 * r for r in
            (_ratio(b["cache_hits"], b["cache_hits"] + b["cache_misses"]) for b in series)])],
            unit="%", top=100, chart_id="chart-cache"),
    ))
    span = f'<p class="muted">{e(fmt_time(s["since"]))} – {e(fmt_time(s["until"]))} UTC, ' \
           f'{e(fmt_num(s["bucket_secs"] / 60, 0))}-minute buckets.</p>'
    return _page("Overview", head + f'<div class="tiles">{tiles}</div>{span}'
                 f'<div class="charts">{charts}</div>', "overview", session)


def _page(title: str, body: str, active: str, session: Session, *,
          status: int = 200) -> web.Response:
    return html_response(page(title, body, active=active, csrf=session.csrf,
                              nonce=session.nonce), status=status, nonce=session.nonce)


def _kv(data: dict[str, Any]) -> str:
    rows = [(e(k), e(v if not isinstance(v, (dict, list)) else _short(v))) for k, v in data.items()]
    return table(("setting", "value"), rows)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 400 else text[:400] + "…"


async def _provider_health(store: Any, name: str) -> tuple[str, str]:
    """(health line, recent errors table) from the last 15 minutes of the request log."""
    if store is None:
        return '<span class="muted">unknown (request log off)</span>', ""
    since = time.time() - 900
    try:
        _, total = await store.query(provider=name, since=since, limit=0)
        errors, failed = await store.query(provider=name, status="error", since=since, limit=5)
    except P5ProxyError as exc:
        return f'<span class="bad">{e(exc.message)}</span>', ""
    if not total:
        health = '<span class="muted">no requests in the last 15 min</span>'
    elif not failed:
        health = f'<span class="ok">ok</span>: {total} requests in the last 15 min, no errors'
    else:
        health = (f'<span class="bad">{failed} of {total} requests failed</span> '
                  f'in the last 15 min')
    rows = [(e(fmt_time(r["ts"])), f'<a href="/admin/log/{e(r["request_id"])}">'
             f'{e(r["request_id"])}</a>', e(r["model"]), e(r["status"]), e(r["error_type"]),
             e(_short(r["error_message"] or ""))) for r in errors]
    recent = ("<h3>Recent errors</h3>" + table(
        ("time (UTC)", "request", "model", "status", "type", "message"), rows)) if rows else ""
    return health, recent


@admin_view
async def providers(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    store = _store(request)
    parts = []
    for name, provider in state.router.providers.items():
        desc = masked(provider.describe())
        keys = ", ".join(mask_secret(k) for k in provider.config.api_keys) or "none"
        extra = {k: v for k, v in desc.items() if k not in ("type", "base_url", "keys")}
        health, recent = await _provider_health(store, name)
        parts.append(
            f'<section class="provider" id="provider-{e(name)}"><h2>{e(name)}</h2>'
            + table(("type", "base URL", "keys (masked)", "health"),
                    [(e(provider.config.type), e(mask_text(provider.config.base_url)), e(keys),
                      health)])
            + (_kv(extra) if extra else "") + recent + "</section>")
    models = [(e(m.pattern), e(m.provider), e(m.model or "(client's name)"),
               e(", ".join(m.filters)),
               e(tool_mode(m, state.router.providers[m.provider])
                 if m.provider in state.router.providers else ""))
              for m in state.config.models]
    client_keys = state.config.auth_keys
    body = "".join(parts) or '<p class="muted">No providers are configured.</p>'
    body += "<h2>Models</h2>" + table(("name", "provider", "upstream model", "filters", "tools"),
                                      models)
    if state.config.default_model:
        body += f'<p>Default model: <code>{e(state.config.default_model)}</code></p>'
    body += ("<h2>Client keys</h2>" + (
        table(("id", "models", "rpm", "tpm"),
              [(e(k.id), e(", ".join(k.models) or "all"), e(str(k.rpm or "-")),
                e(str(k.tpm or "-"))) for k in client_keys]) if client_keys
        else
        '<p class="muted">None: clients need no key (<code>auth.keys</code> is empty).</p>'))
    if store is not None:
        body += "<h2>Request log store</h2>" + _kv(masked(store.describe()))
    return _page("Providers and keys", body, "providers", session)


def _parse_time(value: str, field: str) -> float | None:
    """`YYYY-MM-DDTHH:MM[:SS]` (UTC, as <input type=datetime-local> sends it)."""
    if not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return float(calendar.timegm(time.strptime(value, fmt)))
        except ValueError:
            continue
    raise ValueError(f"{field}: expected a date and time like 2026-01-31T13:45, got {value!r}")


def _filter_form(q: dict[str, str], models: list[str]) -> str:
    options = "".join(f'<option value="{e(s)}"{" selected" if q["status"] == s else ""}>'
                      f'{e(s or "any")}</option>' for s in _STATUSES)
    if q["status"] not in _STATUSES:
        options += f'<option value="{e(q["status"])}" selected>{e(q["status"])}</option>'
    datalist = "".join(f'<option value="{e(m)}">' for m in models)
    return ('<form method="get" action="/admin/log" id="log-filter">'
            f'<label>Model <input name="model" list="models" value="{e(q["model"])}"></label>'
            f'<datalist id="models">{datalist}</datalist>'
            f'<label>Status <select name="status">{options}</select></label>'
            f'<label>Key id <input name="key" value="{e(q["key"])}" size="12"></label>'
            f'<label>Provider <input name="provider" value="{e(q["provider"])}" size="10"></label>'
            f'<label>From (UTC) <input type="datetime-local" name="since" step="1" '
            f'value="{e(q["since"])}"></label>'
            f'<label>To (UTC) <input type="datetime-local" name="until" step="1" '
            f'value="{e(q["until"])}"></label>'
            '<button type="submit">Filter</button> <a href="/admin/log">clear</a></form>')


def _ms(value: Any) -> str:
    return fmt_num(value, 0) if value is not None else ""


@admin_view
async def request_log(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    q = {k: request.query.get(k, "").strip()
         for k in ("model", "status", "key", "provider", "since", "until")}
    try:
        page_no = max(1, int(request.query.get("page", "1")))
        per = min(500, max(5, int(request.query.get("per", str(PAGE_SIZE)))))
    except ValueError:
        page_no, per = 1, PAGE_SIZE
    body = _filter_form(q, state.router.model_names())
    store = _store(request)
    if store is None:
        return _page("Request log", body + _no_store(), "log", session)
    try:
        rows, total = await store.query(
            model=q["model"] or None, status=q["status"] or None, key_id=q["key"] or None,
            provider=q["provider"] or None, since=_parse_time(q["since"], "From"),
            until=_parse_time(q["until"], "To"), limit=per, offset=(page_no - 1) * per)
    except ValueError as exc:
        return _page("Request log", body + f'<p class="err">{e(exc)}</p>', "log", session,
                     status=400)
    except P5ProxyError as exc:
        return _page("Request log", body + f'<p class="err">{e(exc.message)}</p>', "log",
                     session, status=503)
    pages = max(1, -(-total // per))
    kept = {k: v for k, v in q.items() if v}
    if per != PAGE_SIZE:
        kept["per"] = str(per)

    def link(n: int, label: str) -> str:
        return f'<a href="/admin/log?{e(urlencode({**kept, "page": n}))}" rel="{label}">{label}</a>'

    nav = (f'<nav class="pages"><span id="log-total">{total} requests</span>, page {page_no} of '
           f'{pages} {link(page_no - 1, "newer") if page_no > 1 else ""} '
           f'{link(page_no + 1, "older") if page_no < pages else ""}</nav>')
    table_rows = []
    for r in rows:
        status_cls = "bad" if (r["status"] or 0) >= 400 or r["error_type"] else "ok"
        table_rows.append((
            e(fmt_time(r["ts"])),
            f'<a href="/admin/log/{e(r["request_id"])}">{e(r["request_id"])}</a>',
            e(r["protocol"]), f'<span class="model">{e(r["model"])}</span>', e(r["provider"]),
            e(r["client_key_id"]),
            f'<span class="{status_cls} status">{e(r["status"])}</span>',
            _ms(r["latency_ms"]), _ms(r["ttft_ms"]),
            e(f'{fmt_num(r["input_tokens"])} / {fmt_num(r["output_tokens"])}'),
            e(r["cache_status"]), e(r["error_type"])))
    body += nav + table(("time (UTC)", "request id", "protocol", "model", "provider", "key id",
                         "status", "latency ms", "TTFT ms", "tokens in / out", "cache", "error"),
                        table_rows, numeric=(7, 8, 9), attrs='id="log"') + nav
    return _page("Request log", body, "log", session)


@admin_view
async def request_detail(request: web.Request, session: Session) -> web.Response:
    rid = request.match_info["request_id"]
    store = _store(request)
    if store is None:
        return _page("Request", _no_store(), "log", session, status=404)
    try:
        row = await store.get(rid)
    except P5ProxyError as exc:
        return _page("Request", f'<p class="err">{e(exc.message)}</p>', "log", session,
                     status=503)
    if row is None:
        return _page("Request", f'<p class="err">No request {e(rid)} in the log.</p>', "log",
                     session, status=404)
    fields = {k: v for k, v in row.items() if k != "error_message"}
    fields["ts"] = f'{fmt_time(row["ts"])} UTC'
    body = _kv(fields)
    if row.get("error_message"):
        body += f'<h2>Error</h2><pre id="error-message">{e(row["error_message"])}</pre>'
    return _page(f"Request {rid}", body + '<p><a href="/admin/log">← request log</a></p>', "log",
                 session)
