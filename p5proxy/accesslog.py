"""One line per API request on logger `p5proxy.access`, at INFO.

`logging.format: text` gives `key=value` pairs; `json` gives one JSON object per line (and
`setup_logging` makes every other log line JSON too). Never the client's key: its id only.
Bodies only with `logging.bodies: true`, then capped at `logging.body_max_bytes` and redacted
(API keys, authorization headers, passwords, tokens, secrets).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

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


def access_fields(rec: RequestRecord, settings: LoggingConfig,
                  resp: web.StreamResponse | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": rec.request_id, "client_key_id": rec.client_key_id,
        "method": rec.method, "path": rec.path, "protocol": rec.protocol, "model": rec.model,
        "route": f"{rec.provider}/{rec.upstream_model}" if rec.provider else None,
        "status": rec.status, "stream": rec.stream,
        "latency_ms": round(rec.latency_ms, 1) if rec.latency_ms is not None else None,
        "ttft_ms": round(rec.ttft_ms, 1) if rec.ttft_ms is not None else None,
        "overhead_ms": rec.overhead_ms,
        "input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens,
        "cached_tokens": rec.cached_tokens, "cache": rec.cache_status,
        "retries": rec.retries or None, "fallback": rec.fallback or None,
        "error_type": rec.error_type, "client_ip": rec.client_ip,
    }
    if settings.bodies:
        fields["request_body"] = _body(rec.request_body, settings.body_max_bytes)
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            fields["response_body"] = _body(resp.body, settings.body_max_bytes)
    return {k: v for k, v in fields.items() if v is not None}


_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')


def _text_value(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:   # most fields: nothing to quote
        return str(value)
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return orjson.dumps(text).decode()
    return text


def log_request(rec: RequestRecord, settings: LoggingConfig,
                resp: web.StreamResponse | None) -> None:
    if not settings.access or not access_log.isEnabledFor(logging.INFO):
        return
    fields = access_fields(rec, settings, resp)
    if settings.format == "json":
        message = orjson.dumps(fields).decode()
    else:
        message = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        handler = direct(access_log)
        if handler is not None:   # the same line, without a LogRecord
            formatter = handler.formatter
            assert isinstance(formatter, TextFormatter)
            handler.write_line(f"{formatter.stamp(time.time())} INFO p5proxy.access: {message}")
            return
    access_log.info(message, extra={"p5proxy_fields": fields})


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time, level, logger, message; an access line's
    fields are merged in instead of its message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name}
        fields = getattr(record, "p5proxy_fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(settings: LoggingConfig) -> None:
    """With `logging.format: json`, switch the root handlers to JsonFormatter."""
    if settings.format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
