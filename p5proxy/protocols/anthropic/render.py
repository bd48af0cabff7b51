"""Canonical events / final message -> the Anthropic client's wire format."""

from __future__ import annotations

from typing import Any

import orjson

from ...aggregate import FinalMessage
from ...canonical import (BlockStart, BlockStop, ErrorEvent, Heartbeat, MessageDelta,
                          MessageStart, MessageStop, RawDelta, RawPart, SignatureDelta,
                          StreamEvent, TextDelta, TextPart, ThinkingDelta, ThinkingPart,
                          ToolCallPart, ToolInputDelta, Usage)
from ...errors import P5ProxyError
from ...ids import anthropic_safe_id, message_id, tool_use_id
from ..mapping import usage_to_anthropic

__all__ = ["AnthropicStreamRenderer", "render_response", "error_body", "error_status"]

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
# A text_delta frame as a template around the index and orjson.dumps(text): byte for byte
# what _delta/_frame build, without two dicts and a dumps of them on every chunk (the hot path).
_TEXT_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
               b'"delta":{"type":"text_delta","text":%b}}\n\n')


def _frame(name: bytes, obj: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def error_status(err: P5ProxyError) -> int:
    if err.kind == "overloaded_error":
        return 529
    return 400 if err.status == 422 else err.status


def error_body(err: P5ProxyError, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": err.kind, "message": err.message}}
    if request_id:
        body["request_id"] = request_id
    return body


def _start_block(block: Any) -> dict[str, Any]:
    if isinstance(block, TextPart):
        return {"type": "text", "text": "", **(block.meta or {})}
    if isinstance(block, ThinkingPart):
        return {"type": "thinking", "thinking": "", "signature": ""}
    if isinstance(block, ToolCallPart):
        # `input` must be present (Claude Code's renderer crashed without it); the real input
        # follows as input_json_delta, which is all Claude Code reads.
        return {"type": "tool_use", "id": _tool_id(block.id), "name": block.name, "input": {}}
    if isinstance(block, RawPart) and block.protocol == "anthropic":
        return block.data
    return {"type": "text", "text": ""}


def _tool_id(upstream_id: str) -> str:
    """A native-looking id, derived deterministically so the tool_result that comes back maps
    to the same id upstream."""
    if upstream_id.startswith("toolu_"):
        return upstream_id
    return "toolu_" + anthropic_safe_id(upstream_id) if upstream_id else tool_use_id()


class AnthropicStreamRenderer:
    """Renders events as `event:`/`data:` frames. Block indexes are renumbered 0,1,2… in start
    order, so upstream quirks or filters that drop blocks never leave gaps."""

    __slots__ = ("model", "input_estimate", "passthrough", "_index", "_next", "_started")

    def __init__(self, *, model: str, input_estimate: int = 0, passthrough: bool = False,
                 include_usage: bool = True) -> None:
        self.model = model
        self.input_estimate = input_estimate
        self.passthrough = passthrough
        self._index: dict[int, int] = {}
        self._next = 0
        self._started = False

    def render(self, ev: StreamEvent) -> bytes:
        match ev:
            case TextDelta():
                return _TEXT_DELTA % (self._index.get(ev.index, 0), orjson.dumps(ev.text))
            case ToolInputDelta():
                return self._delta(ev.index, {"type": "input_json_delta",
                                              "partial_json": ev.partial_json})
            case ThinkingDelta():
                return self._delta(ev.index, {"type": "thinking_delta", "thinking": ev.text})
            case SignatureDelta():
                return self._delta(ev.index, {"type": "signature_delta",
                                              "signature": ev.signature})
            case BlockStart():
                out = self._next
                self._next += 1
                self._index[ev.index] = out
                return _frame(b"content_block_start", {"type": "content_block_start",
                                                       "index": out,
                                                       "content_block": _start_block(ev.block)})
            case BlockStop():
                return _frame(b"content_block_stop", {"type": "content_block_stop",
                                                      "index": self._index.get(ev.index, 0)})
            case MessageStart():
                return self._message_start(ev)
            case MessageDelta():
                return self._message_delta(ev)
            case MessageStop():
                return _STOP
            case RawDelta() if ev.protocol == "anthropic":
                return self._delta(ev.index, ev.delta)
            case Heartbeat():
                # before message_start only a comment is safe: SDKs demand message_start first
                return _PING if self._started else b": keep-alive\n\n"
            case ErrorEvent():
                return self.error(ev.error)
        return b""

    def error(self, err: Exception) -> bytes:
        if not isinstance(err, P5ProxyError):
            err = P5ProxyError("internal error in the gateway")
        return _frame(b"error", error_body(err))

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _frame(b"content_block_delta", {"type": "content_block_delta",
                                               "index": self._index.get(index, 0), "delta": delta})

    def _message_start(self, ev: MessageStart) -> bytes:
        self._started = True
        usage = ev.usage or Usage()
        if not usage.prompt_tokens:
            usage = Usage(input_tokens=self.input_estimate, output_tokens=usage.output_tokens)
        msg: dict[str, Any] = {
            "id": ev.id if self.passthrough and ev.id else message_id(),
            "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {**usage_to_anthropic(usage), "output_tokens": usage.output_tokens or 1},
        }
        if self.passthrough and ev.extra:
            msg.update(ev.extra)
        return _frame(b"message_start", {"type": "message_start", "message": msg})

    def _message_delta(self, ev: MessageDelta) -> bytes:
        usage = ev.usage or Usage()
        if not usage.prompt_tokens:
            usage.input_tokens = self.input_estimate
        delta: dict[str, Any] = {"stop_reason": ev.stop_reason or "end_turn",
                                 "stop_sequence": ev.stop_sequence}
        if self.passthrough and ev.extra:
            delta.update(ev.extra)
        # Cumulative and authoritative for Claude Code: always carry the input counters too.
        return _frame(b"message_delta", {"type": "message_delta", "delta": delta,
                                         "usage": usage_to_anthropic(usage)})


def _content_block(part: Any) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text, **(part.meta or {})}
    if isinstance(part, ThinkingPart):
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": _tool_id(part.id), "name": part.name, "input": part.input}
    if isinstance(part, RawPart) and part.protocol == "anthropic":
        return part.data
    return None


def render_response(final: FinalMessage, *, model: str, input_estimate: int = 0,
                    passthrough: bool = False) -> dict[str, Any]:
    usage = final.usage
    if not usage.prompt_tokens:
        usage.input_tokens = input_estimate
    body: dict[str, Any] = {
        "id": final.id if passthrough and final.id else message_id(),
        "type": "message", "role": "assistant", "model": model,
        "content": [b for b in map(_content_block, final.blocks) if b is not None],
        "stop_reason": final.stop_reason or "end_turn", "stop_sequence": final.stop_sequence,
        "usage": usage_to_anthropic(usage),
    }
    if passthrough and final.extra:
        body.update(final.extra)
    return body
