"""Event payloads from upstreams: usually one JSON value, sometimes several glued together."""

from __future__ import annotations

import json
from typing import Any

import orjson

from ..errors import UpstreamProtocolError

__all__ = ["loads_values"]

_DECODER = json.JSONDecoder()


def loads_values(data: str, provider: str = "") -> list[Any]:
    """The JSON values in one event's data. Some upstreams glue two chunks into one `data:`
    (`{"a":1}{"b":2}`, seen with GLM/Kimi tool calls): split them rather than fail the stream."""
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError:
        pass
    values, pos, end = [], 0, len(data)
    try:
        while pos < end:
            value, pos = _DECODER.raw_decode(data, pos)
            values.append(value)
            while pos < end and data[pos] in " \t\r\n":
                pos += 1
    except json.JSONDecodeError:
        raise UpstreamProtocolError(f"invalid JSON in upstream event: {data[:200]!r}",
                                    provider=provider) from None
    return values
