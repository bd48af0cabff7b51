"""Anthropic upstream responses (JSON or SSE) -> canonical StreamEvents."""

from __future__ import annotations

from typing import Any

import orjson

from ...canonical import (BlockStart, BlockStop, ErrorEvent, MessageDelta, MessageStart,
                          MessageStop, RawDelta, RawPart, SignatureDelta, StreamEvent, TextDelta,
                          TextPart, ThinkingDelta, ThinkingPart, ToolCallPart, ToolInputDelta, Usage)
from ...errors import UpstreamProtocolError, UpstreamStatusError, kind_for_status
from .._json import loads_values
from ..envelope import LEARN_TRIES, Envelope, learn
from ..mapping import usage_from_anthropic

__all__ = ["AnthropicStreamParser", "parse_response", "parse_error"]

_MESSAGE_KEYS = ("id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage")
_STATUS_BY_KIND = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                   "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                   "rate_limit_error": 429, "api_error": 500, "timeout_error": 504,
                   "overloaded_error": 529}


def _block_start(index: int, block: dict[str, Any]) -> BlockStart:
    btype = block.get("type")
    if btype == "text":
        extra = {k: v for k, v in block.items() if k not in ("type", "text")}
        return BlockStart(index, TextPart("", extra or None))
    if btype == "thinking":
        return BlockStart(index, ThinkingPart("", ""))
    if btype == "tool_use":
        return BlockStart(index, ToolCallPart(block.get("id") or "", block.get("name") or "", {}))
    return BlockStart(index, RawPart(block, "anthropic"))


def _delta(index: int, delta: dict[str, Any]) -> StreamEvent:
    dtype = delta.get("type")
    if dtype == "text_delta":
        return TextDelta(index, delta.get("text") or "")
    if dtype == "input_json_delta":
        return ToolInputDelta(index, delta.get("partial_json") or "")
    if dtype == "thinking_delta":
        return ThinkingDelta(index, delta.get("thinking") or "")
    if dtype == "signature_delta":
        return SignatureDelta(index, delta.get("signature") or "")
    return RawDelta(index, delta, "anthropic")


def parse_error(status: int, error: Any, *, provider: str = "",
                retry_after: str | None = None) -> UpstreamStatusError:
    """An Anthropic error body (or its `error` object) -> UpstreamStatusError."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(kind, str):
        kind = kind_for_status(status)
    if status == 200:   # in-stream error: the status the error would have had
        status = _STATUS_BY_KIND.get(kind, 500)
    return UpstreamStatusError(str(message or f"upstream error {status}"), provider=provider,
                               status=status, kind=kind, retry_after=retry_after)


class AnthropicStreamParser:
    """Feed (event, data) pairs; events come back nearly 1:1. Routes on data.type, not on the
    event name (some Anthropic-compatible upstreams omit `event:` lines)."""

    __slots__ = ("provider", "usage", "done", "_stopped", "_fast", "_envelope", "_index",
                 "_learns")

    def __init__(self, provider: str = "", *, text_fast_path: bool = True) -> None:
        self.provider = provider
        self.usage = Usage()
        self.done = False
        self._stopped: str | None = None   # stop_reason once message_delta was seen
        self._fast = text_fast_path   # off: every event is parsed (tests)
        # what surrounds the text of this stream's text_delta events (envelope.py), learned
        # again for a new text block (the index is part of it)
        self._envelope: Envelope | None = None
        self._index = 0
        self._learns = 0

    def feed(self, event: str, data: str) -> list[StreamEvent]:
        if self.done or not data or data == "[DONE]":
            return []
        envelope = self._envelope
        if envelope is not None:
            text = envelope.text(data)
            if text is not None:
                return [TextDelta(self._index, text)]
        values = loads_values(data, self.provider)
        out: list[StreamEvent] = []
        for obj in values:
            if isinstance(obj, dict) and not self.done:
                out.extend(self._feed_obj(event, obj))
        if self._fast and len(values) == 1 and len(out) == 1 and type(out[0]) is TextDelta \
                and self._learns < LEARN_TRIES and values[0].get("type") == "content_block_delta":
            self._learn(data, values[0], out[0])
        return out

    def _learn(self, data: str, obj: dict[str, Any], ev: TextDelta) -> None:
        if self._envelope is not None and ev.index == self._index:
            return   # this block's envelope did not fit this event: it will not fit the next
        self._learns += 1
        self._index = ev.index
        delta = obj.get("delta")
        self._envelope = learn(data, obj, delta, "text") if isinstance(delta, dict) else None

    def _feed_obj(self, event: str, obj: dict[str, Any]) -> list[StreamEvent]:
        etype = obj.get("type") or event
        if etype == "content_block_delta":
            return [_delta(obj.get("index", 0), obj.get("delta") or {})]
        if etype == "content_block_start":
            return [_block_start(obj.get("index", 0), obj.get("content_block") or {})]
        if etype == "content_block_stop":
            return [BlockStop(obj.get("index", 0))]
        if etype == "message_start":
            msg = obj.get("message") or {}
            usage_from_anthropic(msg.get("usage") or {}, self.usage)
            extra = {k: v for k, v in msg.items() if k not in _MESSAGE_KEYS}
            return [MessageStart(msg.get("id"), msg.get("model"), _copy(self.usage), extra or None)]
        if etype == "message_delta":
            delta = obj.get("delta") or {}
            usage_from_anthropic(obj.get("usage") or {}, self.usage)
            self._stopped = delta.get("stop_reason") or "end_turn"
            extra = {k: v for k, v in delta.items() if k not in ("stop_reason", "stop_sequence")}
            return [MessageDelta(self._stopped, delta.get("stop_sequence"), _copy(self.usage),
                                 extra or None)]
        if etype == "message_stop":
            self.done = True
            return [MessageStop()]
        if etype == "error" or "error" in obj and etype not in ("ping",):
            self.done = True
            return [ErrorEvent(parse_error(200, obj.get("error"), provider=self.provider))]
        return []   # ping and unknown events

    def close(self) -> list[StreamEvent]:
        """End of the upstream body. A message_delta with a stop reason is a complete answer
        even if message_stop was lost; anything less is a truncation, reported as an error."""
        if self.done:
            return []
        if self._stopped is not None:
            self.done = True
            return [MessageStop()]
        raise UpstreamProtocolError("upstream stream ended before message_stop (truncated)",
                                    provider=self.provider)


def _copy(usage: Usage) -> Usage:
    return Usage(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                 usage.cache_creation_tokens, usage.reasoning_tokens,
                 dict(usage.extra) if usage.extra else None, usage.extra_protocol)


def parse_response(body: dict[str, Any], provider: str = "") -> list[StreamEvent]:
    """A non-streaming Messages response as the one-shot stream it is equivalent to."""
    usage = usage_from_anthropic(body.get("usage") or {})
    extra = {k: v for k, v in body.items() if k not in _MESSAGE_KEYS}
    events: list[StreamEvent] = [MessageStart(body.get("id"), body.get("model"), _copy(usage))]
    for index, block in enumerate(body.get("content") or []):
        btype = block.get("type")
        if btype == "text":
            extra_block = {k: v for k, v in block.items() if k not in ("type", "text")}
            events.append(BlockStart(index, TextPart("", extra_block or None)))
            if block.get("text"):
                events.append(TextDelta(index, block["text"]))
        elif btype == "thinking":
            events.append(BlockStart(index, ThinkingPart("", "")))
            events.append(ThinkingDelta(index, block.get("thinking") or ""))
            events.append(SignatureDelta(index, block.get("signature") or ""))
        elif btype == "tool_use":
            events.append(BlockStart(index, ToolCallPart(block.get("id") or "",
                                                         block.get("name") or "", {})))
            events.append(ToolInputDelta(index, orjson.dumps(block.get("input") or {}).decode()))
        else:
            events.append(BlockStart(index, RawPart(block, "anthropic")))
        events.append(BlockStop(index))
    events.append(MessageDelta(body.get("stop_reason") or "end_turn", body.get("stop_sequence"),
                               usage, extra or None))
    events.append(MessageStop())
    return events
