"""HTML for the admin page: one layout, small helpers, and SVG charts drawn on the server.

Every value that reaches the page goes through `e()` (html.escape): model names, error
messages and key ids come from clients. No external resources: the page works offline.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["e", "page", "table", "fmt_time", "fmt_num", "line_chart", "bar_chart", "NAV"]

NAV = (("overview", "/admin", "Overview"), ("providers", "/admin/providers", "Providers and keys"),
       ("log", "/admin/log", "Request log"), ("config", "/admin/config", "Configuration"),
       ("try", "/admin/try", "Try it"))

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a{color:#cfd6e6;text-decoration:none}header a.on{color:#fff;font-weight:600}
header form{margin-left:auto}main{padding:1em 1.2em;max-width:1400px}
h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e8;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef0f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid #dde1e8;padding:.6em;overflow:auto;white-space:pre-wrap}
.tiles{display:flex;gap:.8em;flex-wrap:wrap}.tile{background:#fff;border:1px solid #dde1e8;padding:.5em .9em;min-width:9em}
.tile b{display:block;font-size:1.35em}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em}
.chart{background:#fff;border:1px solid #dde1e8;padding:.4em}.chart h3{margin:0 0 .2em;font-size:.95em}
.ok{color:#17803d}.bad{color:#b42318}.muted{color:#6b7385}.err{background:#fdecea;border:1px solid #f3b8b3;padding:.6em}
.notice{background:#eaf4ec;border:1px solid #b6dcc0;padding:.6em}form.inline{display:inline}
label{margin-right:.8em}input,select,textarea,button{font:inherit}textarea{width:100%;max-width:50em}
nav.pages{margin:.6em 0}nav.pages a{margin-right:1em}
"""

_JS = """
(function(){
  var box=document.getElementById('autorefresh');
  if(box){box.checked=localStorage.getItem('p5proxy-autorefresh')==='1';
    var t=null;function arm(){if(t){clearTimeout(t);t=null}if(box.checked){t=setTimeout(function(){location.reload()},10000)}}
    box.addEventListener('change',function(){localStorage.setItem('p5proxy-autorefresh',box.checked?'1':'0');arm()});arm();}
  document.querySelectorAll('form[data-confirm]').forEach(function(f){
    f.addEventListener('submit',function(ev){if(!confirm(f.getAttribute('data-confirm'))){ev.preventDefault()}})});
  document.querySelectorAll('form[data-busy]').forEach(function(f){
    f.addEventListener('submit',function(){var b=f.querySelector('button[type=submit]');
      if(b){b.disabled=true;b.textContent=f.getAttribute('data-busy')}})});
})();
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def fmt_num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def page(title: str, body: str, *, active: str = "", csrf: str | None = None,
         nonce: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if key == active else ""}>{e(label)}</a>'
                  for key, href, label in NAV) if csrf is not None else ""
    logout = (f'<form method="post" action="/admin/logout"><input type="hidden" name="csrf" '
              f'value="{e(csrf)}"><button type="submit">Log out</button></form>'
              if csrf is not None else "")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{e(title)} · p5proxy admin</title><style>{_CSS}</style></head><body>'
            f'<header><strong>p5proxy</strong>{nav}{logout}</header>'
            f'<main><h1>{e(title)}</h1>{body}</main>'
            f'<script nonce="{e(nonce)}">{_JS}</script></body></html>')


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (),
          attrs: str = "") -> str:
    """Cells are HTML already (escape values with e() before)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join("<tr>" + "".join(
        f'<td{" class=n" if i in numeric else ""}>{cell}</td>' for i, cell in enumerate(row))
        + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table {attrs}>{thead}<tbody>{body}</tbody></table>"


_W, _H, _PAD_L, _PAD_B, _PAD_T = 420, 160, 46, 20, 8
_COLORS = ("#2563eb", "#d97706", "#16a34a", "#9333ea")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp: float = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _axes(top: float, xs: Sequence[float], unit: str) -> str:
    plot_w, plot_h = _W - _PAD_L - 4, _H - _PAD_B - _PAD_T
    grid = []
    for i in range(3):
        v = top * i / 2
        y = _PAD_T + plot_h - plot_h * i / 2
        grid.append(f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{_PAD_L + plot_w}" y2="{y:.1f}" '
                    f'stroke="#e5e7eb"/><text x="{_PAD_L - 4}" y="{y + 4:.1f}" '
                    f'text-anchor="end" font-size="10" fill="#6b7385">'
                    f'{e(fmt_num(v, 0 if top >= 10 else 2))}{e(unit)}</text>')
    if xs:
        for x, anchor, ts in ((_PAD_L, "start", xs[0]), (_PAD_L + plot_w, "end", xs[-1])):
            grid.append(f'<text x="{x}" y="{_H - 5}" text-anchor="{anchor}" font-size="10" '
                        f'fill="#6b7385">{e(time.strftime("%H:%M", time.gmtime(ts)))} UTC</text>')
    return "".join(grid)


def _frame(title: str, svg_body: str, legend: str, chart_id: str) -> str:
    return (f'<div class="chart" id="{e(chart_id)}"><h3>{e(title)}</h3>'
            f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{e(title)}">'
            f'{svg_body}</svg><div class="muted">{legend}</div></div>')


def line_chart(title: str, xs: Sequence[float],
               series: Sequence[tuple[str, Sequence[float | None]]], *, unit: str = "",
               chart_id: str = "", top: float | None = None) -> str:
    """Lines over time; None values leave gaps. `xs` are bucket start times."""
    values = [v for _, vs in series for v in vs if v is not None]
    top = top if top is not None else _nice_max(max(values, default=0.0))
    plot_w, plot_h = _W - _PAD_L - 4, _H - _PAD_B - _PAD_T
    n = max(len(xs), 1)
    parts = [_axes(top, xs, unit)]
    if not values:
        parts.append(f'<text x="{_PAD_L + plot_w / 2:.0f}" y="{_PAD_T + plot_h / 2:.0f}" '
                     'text-anchor="middle" font-size="12" fill="#6b7385">no data</text>')
    legend = []
    for k, (label, vs) in enumerate(series):
        color = _COLORS[k % len(_COLORS)]
        segment: list[str] = []
        segments: list[list[str]] = [segment]
        for i, v in enumerate(vs):
            if v is None:
                segment = []
                segments.append(segment)
                continue
            x = _PAD_L + plot_w * (i + 0.5) / n
            y = _PAD_T + plot_h - plot_h * min(v, top) / top
            segment.append(f"{x:.1f},{y:.1f}")
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif seg:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                             f'points="{" ".join(seg)}"/>')
        last = next((v for v in reversed(vs) if v is not None), None)
        legend.append(f'<span style="color:{color}">■</span> {e(label)}'
                      f'{" (latest " + e(fmt_num(last)) + e(unit) + ")" if last is not None else ""}')
    return _frame(title, "".join(parts), " &nbsp; ".join(legend), chart_id)


def bar_chart(title: str, xs: Sequence[float], values: Sequence[float], *, unit: str = "",
              chart_id: str = "", label: str = "") -> str:
    top = _nice_max(max(values, default=0.0))
    plot_w, plot_h = _W - _PAD_L - 4, _H - _PAD_B - _PAD_T
    n = max(len(values), 1)
    width = plot_w / n
    bars = [_axes(top, xs, unit)]
    for i, v in enumerate(values):
        if v <= 0:
            continue
        h = plot_h * min(v, top) / top
        bars.append(f'<rect x="{_PAD_L + i * width + width * 0.1:.1f}" '
                    f'y="{_PAD_T + plot_h - h:.1f}" width="{max(width * 0.8, 1):.1f}" '
                    f'height="{h:.1f}" fill="{_COLORS[0]}"><title>{e(fmt_num(v))}{e(unit)}'
                    f'</title></rect>')
    legend = f'<span style="color:{_COLORS[0]}">■</span> {e(label or title)}'
    return _frame(title, "".join(bars), legend, chart_id)
