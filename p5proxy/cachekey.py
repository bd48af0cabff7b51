"""The response cache key: a hash of everything that shapes the answer, and nothing else.

In: the resolved route (provider, upstream model, filters), the client protocol, the forwarded
protocol headers (anthropic-beta, anthropic-version), the tenant, and every field of the body —
system, messages, tools, tool choice, sampling, max tokens, stop sequences, thinking, response
format, unknown fields too. Out: the stream flag and stream options (a cached answer is replayed
in either mode), `metadata.user_id` and OpenAI's `user` (who asks, not what), the client's
model alias (the route stands for it), and Claude Code's `x-anthropic-billing-header` system
line, which changes with every conversation.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .canonical import ChatRequest
from .provider import Route
from .rawjson import json_default

__all__ = ["cache_key", "BILLING_LINE"]

BILLING_LINE = "x-anthropic-billing-header:"
_NOT_IN_KEY = frozenset(("stream", "stream_options", "user", "model"))


def _system_without_billing(system: Any) -> Any:
    if isinstance(system, str):
        return "" if system.startswith(BILLING_LINE) else system
    if isinstance(system, list):
        return [b for b in system if not (isinstance(b, dict)
                                          and str(b.get("text", "")).startswith(BILLING_LINE))]
    return system


def cache_key(req: ChatRequest, route: Route, tenant: str) -> str:
    h = hashlib.sha256(orjson.dumps([
        route.provider.name, route.upstream_model, [f.name for f in route.filters],
        req.ingress, sorted(req.headers.items()), tenant]))
    raw = req.raw
    for name in sorted(raw):   # clients differ in field order, not in meaning
        value = raw[name]
        if name in _NOT_IN_KEY:
            continue
        if name == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "user_id"}
        elif name == "system":
            value = _system_without_billing(value)
        h.update(name.encode())
        h.update(orjson.dumps(value, default=json_default))   # tool schemas kept as bytes too
    return h.hexdigest()
