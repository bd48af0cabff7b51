"""Canonical events / final message -> the OpenAI client's wire format."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ...aggregate import FinalMessage
from ...canonical import (BlockStart, ErrorEvent, Heartbeat, MessageDelta, MessageStart,
                          MessageStop, StreamEvent, TextDelta, TextPart, ThinkingDelta,
                          ThinkingPart, ToolCallPart, ToolInputDelta, Usage)
from ...errors import P5ProxyError
from ...ids import completion_id, tool_call_id
from ..mapping import stop_to_openai, usage_to_openai

__all__ = ["OpenAIStreamRenderer", "render_response", "error_body", "error_status"]

_DONE = b"data: [DONE]\n\n"
# A text chunk's choice around orjson.dumps(text): byte for byte what _chunk would build for
# {"content": text}, without a dict and a dumps of it on every chunk (the hot path).
_CONTENT_HEAD = b'{"index":0,"delta":{"content":'
_CONTENT_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
_KEEPALIVE = b": keep-alive\n\n"
_TYPE_BY_KIND = {"authentication_error": "invalid_request_error",
                 "not_found_error": "invalid_request_error",
                 "request_too_large": "invalid_request_error",
                 "rate_limit_error": "rate_limit_exceeded", "billing_error": "insufficient_quota",
                 "api_error": "server_error", "overloaded_error": "server_error",
                 "timeout_error": "server_error"}
_CODE_BY_KIND = {"authentication_error": "invalid_api_key", "not_found_error": "model_not_found",
                 "rate_limit_error": "rate_limit_exceeded", "billing_error": "insufficient_quota",
                 "timeout_error": "timeout"}


def error_status(err: P5ProxyError) -> int:
    return 503 if err.status == 529 or err.kind == "overloaded_error" else err.status


def error_body(err: P5ProxyError, request_id: str | None = None) -> dict[str, Any]:
    return {"error": {"message": err.message,
                      "type": _TYPE_BY_KIND.get(err.kind, err.kind),
                      "param": err.param,
                      "code": err.code or _CODE_BY_KIND.get(err.kind)}}


def _tool_id(upstream_id: str) -> str:
    """A native-looking id, derived deterministically (the client sends it back)."""
    if not upstream_id:
        return tool_call_id()
    return upstream_id if upstream_id.startswith("call_") else "call_" + upstream_id


class OpenAIStreamRenderer:
    """Chunks share one envelope; role, tool id and name appear only in the first delta that
    carries them (the Python SDK concatenates repeated string fields)."""

    __slots__ = ("model", "include_usage", "passthrough", "input_estimate", "_prefix",
                 "_tool_index", "_usage", "_said")

    def __init__(self, *, model: str, include_usage: bool, input_estimate: int = 0,
                 passthrough: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.input_estimate = input_estimate
        self.passthrough = passthrough
        self._prefix = b""
        self._tool_index: dict[int, int] = {}
        self._usage: Usage | None = None
        self._said = False   # content or a tool call was sent

    def _chunk(self, delta: dict[str, Any], finish: str | None = None,
               logprobs: Any = None) -> bytes:
        choice = orjson.dumps({"index": 0, "delta": delta, "logprobs": logprobs,
                               "finish_reason": finish})
        return self._prefix + choice + b"]}\n\n"

    def render(self, ev: StreamEvent) -> bytes:
        match ev:
            case TextDelta():
                self._said = True
                if ev.logprobs is not None or ev.refusal:   # as the upstream sent them
                    return self._chunk({"refusal" if ev.refusal else "content": ev.text},
                                       logprobs=ev.logprobs)
                return b"".join((self._prefix, _CONTENT_HEAD, orjson.dumps(ev.text), _CONTENT_TAIL))
            case ToolInputDelta() if ev.partial_json:
                return self._chunk({"tool_calls": [{"index": self._tool_index.get(ev.index, 0),
                                                    "function": {"arguments": ev.partial_json}}]})
            case ThinkingDelta():
                return self._chunk({"reasoning_content": ev.text})
            case BlockStart() if isinstance(ev.block, ToolCallPart):
                k = self._tool_index[ev.index] = len(self._tool_index)
                self._said = True
                return self._chunk({"tool_calls": [{
                    "index": k, "id": _tool_id(ev.block.id), "type": "function",
                    "function": {"name": ev.block.name, "arguments": ""}}]})
            case MessageStart():
                return self._start(ev)
            case MessageDelta():
                self._usage = ev.usage
                # as in the plain answer: content is "" without text or tool calls, else absent
                return self._chunk({} if self._said else {"content": ""},
                                   stop_to_openai(ev.stop_reason))
            case MessageStop():
                return self._usage_chunk() + _DONE if self.include_usage else _DONE
            case Heartbeat():
                return _KEEPALIVE
            case ErrorEvent():
                return self.error(ev.error)
        return b""

    def error(self, err: Exception) -> bytes:
        if not isinstance(err, P5ProxyError):
            err = P5ProxyError("internal error in the gateway")
        return b"data: " + orjson.dumps(error_body(err)) + b"\n\n"

    def _start(self, ev: MessageStart) -> bytes:
        envelope: dict[str, Any] = {
            "id": ev.id if self.passthrough and ev.id else completion_id(),
            "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model}
        if self.passthrough and ev.extra:
            envelope.update(ev.extra)
        head = orjson.dumps(envelope)
        # every chunk: the envelope with `"choices":[` appended, then the choice, then `]}`
        self._prefix = b"data: " + head[:-1] + b',"choices":['
        # no content yet: the SDKs' accumulators must end with None for a tool-only answer
        return self._chunk({"role": "assistant"})

    def _usage_chunk(self) -> bytes:
        usage = self._usage or Usage()
        if not usage.prompt_tokens:
            usage.input_tokens = self.input_estimate
        return (self._prefix[:-len(b'"choices":[')] + b'"choices":[],"usage":'
                + orjson.dumps(usage_to_openai(usage)) + b"}\n\n")


def render_response(final: FinalMessage, *, model: str, input_estimate: int = 0,
                    passthrough: bool = False) -> dict[str, Any]:
    texts, reasoning, calls = [], [], []
    for part in final.blocks:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ThinkingPart):
            reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            raw = (part.meta or {}).get("input_json")   # as the model wrote it, like a stream
            calls.append({"id": _tool_id(part.id), "type": "function",
                          "function": {"name": part.name,
                                       "arguments": raw or orjson.dumps(part.input).decode()}})
    message: dict[str, Any] = {"role": "assistant",
                               # a string whenever there is no tool call: front-ends read it as one
                               "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    usage = final.usage
    if not usage.prompt_tokens:
        usage.input_tokens = input_estimate
    body: dict[str, Any] = {
        "id": final.id if passthrough and final.id else completion_id(),
        "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if calls else stop_to_openai(final.stop_reason)}],
        "usage": usage_to_openai(usage),
    }
    if passthrough and final.extra:
        body.update({k: v for k, v in final.extra.items() if k not in body})
    return body
