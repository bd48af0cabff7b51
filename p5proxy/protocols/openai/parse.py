"""OpenAI-compatible upstream responses (JSON or SSE chunks) -> canonical StreamEvents.

Compatible servers differ: reasoning arrives as `reasoning_content` or `reasoning`, tool-call
entries may lack `index`, arguments may come as an object, usage may come in every chunk, the
finish reason may share a chunk with content. The parser absorbs these; see PROTOCOLS.md §6.2.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...canonical import (BlockStart, ErrorEvent, MessageDelta, MessageStart, MessageStop,
                          StreamEvent, TextDelta, ThinkingDelta, ToolCallPart, ToolInputDelta,
                          Usage)
from ...errors import UpstreamProtocolError, UpstreamStatusError, kind_for_status
from ...ids import tool_call_id
from .._json import loads_values
from ..blocks import DeltaBlocks
from ..envelope import LEARN_TRIES, Envelope, learn
from ..mapping import stop_from_openai, usage_from_openai

__all__ = ["OpenAIStreamParser", "parse_response", "parse_error"]

# the chunk's own fields; the rest of the first chunk (`created` included: a same-protocol stream
# keeps the upstream's time, as a same-protocol answer does) goes on as MessageStart.extra
_ENVELOPE = ("id", "object", "model", "choices", "usage")


def parse_error(status: int, body: Any, *, provider: str = "",
                retry_after: str | None = None) -> UpstreamStatusError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        error = body if isinstance(body, dict) else {}
    message = error.get("message") or error.get("detail") or f"upstream error {status}"
    if status == 200:   # in-stream error object
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
    code = error.get("code")
    return UpstreamStatusError(str(message), provider=provider, status=status,
                               kind=kind_for_status(status), param=error.get("param"),
                               code=code if isinstance(code, str) else None,
                               retry_after=retry_after)


class OpenAIStreamParser(DeltaBlocks):
    __slots__ = ("provider", "done", "_started", "_tools", "_finish", "_stop_sequence", "_usage",
                 "_saw_tool", "_out_chars", "_fast", "_envelope", "_learns")

    def __init__(self, provider: str = "", *, plain_text_fast_path: bool = True) -> None:
        super().__init__()
        self.provider = provider
        self._fast = plain_text_fast_path   # off: every chunk takes the general path (tests)
        self.done = False
        self._started = False
        self._tools: dict[Any, tuple[int, str]] = {}   # tool key -> (block index, id)
        self._finish: str | None = None
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None
        self._saw_tool = False
        self._out_chars = 0
        # what surrounds the content string of this stream's plain-text chunks, learned from
        # one of the first (envelope.py); once learned it is kept: an upstream whose chunks
        # differ (a per-chunk field such as OpenAI's `obfuscation`) keeps the path below
        self._envelope: Envelope | None = None
        self._learns = 0

    def feed(self, event: str, data: str) -> list[StreamEvent]:
        if self.done or not data:
            return []
        if data == "[DONE]":
            return self._end()
        if self._started and self._fast:
            text = self._plain_text(data)
            if text is not None:
                return [TextDelta(self._open[1], text)] if text else []   # type: ignore[index]
        out: list[StreamEvent] = []
        for obj in loads_values(data, self.provider):
            if isinstance(obj, dict) and not self.done:
                out.extend(self.feed_obj(obj))
        return out

    def _plain_text(self, data: str) -> str | None:
        """The text of the chunk nearly every stream is made of, one choice whose delta is only
        `content`, inside an open text block, with no finish reason, usage or error; None for
        anything else (the general path below then reads it). The same events, fewer steps."""
        open_ = self._open
        if open_ is None or open_[0] != "text":
            return None
        envelope = self._envelope
        if envelope is not None:
            text = envelope.text(data)
            if text is not None:
                self._out_chars += len(text)
                return text
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if obj.__class__ is not dict or obj.get("usage") is not None or obj.get("error"):
            return None
        choices = obj.get("choices")
        if choices.__class__ is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if choice.__class__ is not dict or choice.get("finish_reason") is not None \
                or choice.get("logprobs") is not None:
            return None
        delta = choice.get("delta")
        if delta.__class__ is not dict or len(delta) != 1:
            return None
        content = delta.get("content")
        if content.__class__ is not str:
            return None
        self._out_chars += len(content)
        if self._envelope is None and self._learns < LEARN_TRIES:
            self._learns += 1
            self._envelope = learn(data, obj, delta, "content")
        return content

    def feed_obj(self, obj: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if obj.get("error"):
            self.done = True
            return [ErrorEvent(parse_error(200, obj, provider=self.provider))]
        choices = obj.get("choices")
        if not self._started and (choices or obj.get("usage")):
            self._started = True
            extra = {k: v for k, v in obj.items() if k not in _ENVELOPE and v is not None}
            out.append(MessageStart(obj.get("id"), obj.get("model"), None, extra or None))
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or choice.get("message") or {}
            self._delta(delta, out)
            logprobs = choice.get("logprobs")
            if logprobs is not None:   # goes with the chunk's text (there is none without it)
                for ev in reversed(out):
                    if type(ev) is TextDelta:
                        ev.logprobs = logprobs
                        break
            finish = choice.get("finish_reason")
            if finish == "error":
                self.done = True
                out.append(ErrorEvent(UpstreamProtocolError("upstream reported an error mid-stream",
                                                             provider=self.provider)))
                return out
            if finish and self._finish is None:
                self._finish = finish
                if isinstance(choice.get("stop_reason"), str):   # vLLM names the stop string
                    self._stop_sequence = choice["stop_reason"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = usage_from_openai(usage)   # cumulative when repeated: keep the last
        return out

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        # Fast path for the chunk that makes up nearly every stream, `{"content": "..."}`
        # inside an open text block: skips the reasoning/tool lookups and `_ensure`. Same
        # events as the general path below.
        if len(delta) == 1:
            content = delta.get("content")
            open_ = self._open
            if content.__class__ is str and open_ is not None and open_[0] == "text":
                if content:
                    self._out_chars += len(content)
                    out.append(TextDelta(open_[1], content))
                return
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            index = self._ensure("thinking", out)
            self._thinking.append(reasoning)
            out.append(ThinkingDelta(index, reasoning))
        self._text(delta.get("content"), False, out)
        self._text(delta.get("refusal"), True, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool(call, out)

    def _text(self, text: Any, refusal: bool, out: list[StreamEvent]) -> None:
        """A delta's `content`, or its `refusal` (text for a client that has no such field)."""
        if isinstance(text, str) and text:
            index = self._ensure("text", out)
            self._out_chars += len(text)
            out.append(TextDelta(index, text, refusal=refusal))

    def _tool(self, call: dict[str, Any], out: list[StreamEvent]) -> None:
        fn = call.get("function") or {}
        key = call.get("index")
        if not isinstance(key, int):
            key = call.get("id") or (self._open[1] if self._open and self._open[0] == "tool"
                                     else len(self._tools))
        known = self._tools.get(key)
        if known is not None and call.get("id") and call["id"] != known[1]:
            known = None    # a new call reusing an index (some upstreams)
            key = (key, call["id"])
        if known is None:
            self._close(out)
            index = self._next
            self._next += 1
            cid = call.get("id") or tool_call_id()
            self._tools[key] = (index, cid)
            self._open = ("tool", index)
            self._saw_tool = True
            out.append(BlockStart(index, ToolCallPart(cid, fn.get("name") or "", {})))
        else:
            index = known[0]
        args = fn.get("arguments")
        if isinstance(args, dict):
            args = orjson.dumps(args).decode()
        if isinstance(args, str) and args:
            self._out_chars += len(args)
            out.append(ToolInputDelta(index, args))

    def _end(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            out.append(MessageStart())
            self._started = True
        self._close(out)
        usage = self._usage or Usage(output_tokens=self._out_chars // 4 + (1 if self._out_chars else 0))
        stop = "tool_use" if self._saw_tool else stop_from_openai(self._finish)
        stop_sequence = None
        if stop == "end_turn" and self._stop_sequence:
            stop, stop_sequence = "stop_sequence", self._stop_sequence
        out.append(MessageDelta(stop, stop_sequence, usage))
        out.append(MessageStop())
        self.done = True
        return out

    def close(self) -> list[StreamEvent]:
        """End of the upstream body: a finish reason without [DONE] is complete; no finish
        reason at all is a truncation and becomes an error, never a fake normal ending."""
        if self.done:
            return []
        if self._finish is not None:
            return self._end()
        raise UpstreamProtocolError("upstream stream ended without a finish_reason (truncated)",
                                    provider=self.provider)


def parse_response(body: dict[str, Any], provider: str = "") -> list[StreamEvent]:
    """A non-streaming completion replayed through the stream parser: one code path."""
    choices = body.get("choices") or []
    if not choices:
        raise UpstreamProtocolError("upstream response has no choices", provider=provider)
    parser = OpenAIStreamParser(provider)
    chunk = {**body, "choices": [{"index": 0, "delta": c.get("message") or {},
                                  "finish_reason": c.get("finish_reason") or "stop",
                                  "logprobs": c.get("logprobs"),
                                  **({"stop_reason": c["stop_reason"]} if "stop_reason" in c else {})}
                                 for c in choices[:1]]}
    events = parser.feed_obj(chunk)
    events.extend(parser.feed("", "[DONE]"))
    return events
