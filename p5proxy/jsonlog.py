"""`logging.format: json`: every log line as one JSON object. Not compiled (setup.py): a class
compiled with mypyc must not derive from an interpreted one such as logging.Formatter."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["JsonFormatter"]


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
