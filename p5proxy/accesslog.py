"""One line per API request on logger `p5proxy.access`, at INFO.

`logging.format: text` gives `key=value` pairs; `json` gives one JSON object per line (and
`setup_logging` makes every other log line JSON too). Never the client's key: its id only.
Bodies only with `logging.bodies: true`, then capped at `logging.body_max_bytes` and redacted
(API keys, authorization headers, passwords, tokens, secrets).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .jsonlog import JsonFormatter
from .loghandler import TextFormatter, direct

if TYPE_CHECKING:
    from .config import LoggingConfig
    from .record import RequestRecord

__all__ = ["log_request", "access_fields", "redact", "setup_logging", "JsonFormatter",
           "access_log"]

access_log = logging.getLogger("p5proxy.access")

_SECRET_FIELD = re.compile(
    r'("(?:[A-Za-z0-9_-]*(?:api[_-]?key|authorization|password|passwd|secret|token)'
    r'[A-Za-z0-9_-]*)"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"(?:sk-(?:ant-)?[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|AIza[0-9A-Za-z_-]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|gh[pousr]_[A-Za-z0-9]{20,})")
_REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """Blank the values of secret-named JSON fields and anything shaped like an API key."""
    text = _SECRET_FIELD.sub(lambda m: f'{m.group(1)}"{_REDACTED}"', text)
    return _SECRET_VALUE.sub(_REDACTED, text)


def _body(raw: bytes | None, cap: int) -> str | None:
    if not raw:
        return None
    text = raw[:cap].decode("utf-8", "replace")
    suffix = f"…[{len(raw) - cap} more bytes]" if len(raw) > cap else ""
    return redact(text) + suffix


_FIELDS = ("request_id", "client_key_id", "method", "path", "protocol", "model", "route",
           "status", "stream", "latency_ms", "ttft_ms", "overhead_ms", "input_tokens",
           "output_tokens", "cached_tokens", "cache", "retries", "fallback", "error_type",
           "client_ip")


def _values(rec: RequestRecord) -> tuple[Any, ...]:
    """The access line's values, in the order of _FIELDS (None: left out of the line)."""
    return (rec.request_id, rec.client_key_id, rec.method, rec.path, rec.protocol, rec.model,
            f"{rec.provider}/{rec.upstream_model}" if rec.provider else None,
            rec.status, "true" if rec.stream else "false",
            round(rec.latency_ms, 1) if rec.latency_ms is not None else None,
            round(rec.ttft_ms, 1) if rec.ttft_ms is not None else None,
            rec.overhead_ms, rec.input_tokens, rec.output_tokens, rec.cached_tokens,
            rec.cache_status, rec.retries or None, "true" if rec.fallback else None,
            rec.error_type, rec.client_ip)


def access_fields(rec: RequestRecord, settings: LoggingConfig,
                  resp: web.StreamResponse | None) -> dict[str, Any]:
    fields = {k: v for k, v in zip(_FIELDS, _values(rec)) if v is not None}
    fields["stream"] = rec.stream   # JSON booleans, not the text format's words
    if rec.fallback:
        fields["fallback"] = True
    if settings.bodies:
        body = _body(rec.request_body, settings.body_max_bytes)
        if body is not None:
            fields["request_body"] = body
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            body = _body(resp.body, settings.body_max_bytes)
            if body is not None:
                fields["response_body"] = body
    return fields


_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')


def _text_value(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:
        return str(value)
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return orjson.dumps(text).decode()
    return text


def access_text(rec: RequestRecord) -> str:
    """The text format's `key=value ...` (values with spaces, quotes or `=` are JSON-quoted)."""
    values = _values(rec)
    pairs = [f"{k}={v}" for k, v in zip(_FIELDS, values) if v is not None]
    line = " ".join(pairs)
    # nearly every line needs no quoting: then it has exactly the separators put in above
    if line.count(" ") == len(pairs) - 1 and line.count("=") == len(pairs) and '"' not in line \
            and "\n" not in line and "\t" not in line and "" not in values:
        return line
    return _quoted((k, v) for k, v in zip(_FIELDS, values) if v is not None)


def _quoted(pairs: Iterable[tuple[str, Any]]) -> str:
    """`key=value ...` with each value quoted where it needs it (see _text_value)."""
    return " ".join([f"{k}={_text_value(v)}" for k, v in pairs])


def _direct_line(rec: RequestRecord, formatter: TextFormatter) -> str:
    """The line logging would write, stamped with the time the request ended."""
    ended = rec.ts + (rec.latency_ms or 0.0) / 1000
    return f"{formatter.stamp(ended)} INFO p5proxy.access: {access_text(rec)}"


def log_request(rec: RequestRecord, settings: LoggingConfig,
                resp: web.StreamResponse | None) -> None:
    if not settings.access or not access_log.isEnabledFor(logging.INFO):
        return
    if settings.format == "json" or settings.bodies:
        fields = access_fields(rec, settings, resp)
        if settings.format == "json":
            access_log.info(orjson.dumps(fields).decode(), extra={"p5proxy_fields": fields})
            return
        message = _quoted(fields.items())
    else:
        handler = direct(access_log)
        if handler is not None:   # the same line, without a LogRecord, formatted in a batch
            handler.write_later(_direct_line, rec)
            return
        message = access_text(rec)
    access_log.info(message)


def setup_logging(settings: LoggingConfig) -> None:
    """With `logging.format: json`, switch the root handlers to JsonFormatter."""
    if settings.format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
