"""Canonical parts, stream events and final messages as JSON-ready lists, and back.

Used where they leave the process: the shared cache tier stores final messages, and a leader
instance relays its live events to followers on other instances through Redis. The first element
of each list is a short type tag; the rest are the fields in declaration order.
"""

from __future__ import annotations

from typing import Any

from .aggregate import FinalMessage
from .canonical import (BlockStart, BlockStop, ErrorEvent, ImagePart, MessageDelta, MessageStart,
                        MessageStop, Part, RawDelta, RawPart, SignatureDelta, StreamEvent,
                        TextDelta, TextPart, ThinkingDelta, ThinkingPart, ToolCallPart,
                        ToolInputDelta, ToolResultPart, Usage)
from .errors import P5ProxyError, UpstreamError

__all__ = ["encode_part", "decode_part", "encode_event", "decode_event", "encode_final",
           "decode_final", "encode_error", "decode_error"]


def encode_part(p: Part) -> list[Any]:
    if isinstance(p, TextPart):
        return ["t", p.text, p.meta]
    if isinstance(p, ToolCallPart):
        return ["c", p.id, p.name, p.input, p.meta]
    if isinstance(p, ThinkingPart):
        return ["k", p.text, p.signature, p.redacted, p.meta]
    if isinstance(p, ImagePart):
        return ["i", p.media_type, p.data, p.url, p.meta]
    if isinstance(p, ToolResultPart):
        return ["r", p.tool_call_id, [encode_part(c) for c in p.content], p.is_error, p.meta]
    return ["w", p.data, p.protocol]


def decode_part(v: list[Any]) -> Part:
    tag = v[0]
    if tag == "t":
        return TextPart(v[1], v[2])
    if tag == "c":
        return ToolCallPart(v[1], v[2], v[3], v[4])
    if tag == "k":
        return ThinkingPart(v[1], v[2], v[3], v[4])
    if tag == "i":
        return ImagePart(v[1], v[2], v[3], v[4])
    if tag == "r":
        return ToolResultPart(v[1], [decode_part(c) for c in v[2]], v[3], v[4])
    if tag == "w":
        return RawPart(v[1], v[2])
    raise ValueError(f"unknown part tag {tag!r}")


def _usage(u: Usage | None) -> list[Any] | None:
    if u is None:
        return None
    return [u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_creation_tokens,
            u.reasoning_tokens, u.extra, u.extra_protocol]


def _unusage(v: list[Any] | None) -> Usage | None:
    return None if v is None else Usage(*v)


def encode_error(err: BaseException) -> list[Any]:
    if isinstance(err, P5ProxyError):
        return [err.message, err.status, err.kind, err.retry_after]
    return ["upstream request failed", 502, "api_error", None]


def decode_error(v: list[Any]) -> UpstreamError:
    return UpstreamError(v[0], status=v[1], kind=v[2], retry_after=v[3])


def encode_event(ev: StreamEvent) -> list[Any]:
    if isinstance(ev, TextDelta):
        if ev.refusal:
            return ["td", ev.index, ev.text, ev.logprobs, True]
        return ["td", ev.index, ev.text] if ev.logprobs is None else \
            ["td", ev.index, ev.text, ev.logprobs]
    if isinstance(ev, ToolInputDelta):
        return ["jd", ev.index, ev.partial_json]
    if isinstance(ev, ThinkingDelta):
        return ["kd", ev.index, ev.text]
    if isinstance(ev, SignatureDelta):
        return ["sd", ev.index, ev.signature]
    if isinstance(ev, BlockStart):
        return ["bs", ev.index, encode_part(ev.block)]
    if isinstance(ev, BlockStop):
        return ["be", ev.index]
    if isinstance(ev, RawDelta):
        return ["rd", ev.index, ev.delta, ev.protocol]
    if isinstance(ev, MessageStart):
        # the one-shot upstream body is not relayed: followers render from the events
        return ["ms", ev.id, ev.model, _usage(ev.usage), ev.extra]
    if isinstance(ev, MessageDelta):
        return ["md", ev.stop_reason, ev.stop_sequence, _usage(ev.usage), ev.extra]
    if isinstance(ev, MessageStop):
        return ["me"]
    if isinstance(ev, ErrorEvent):
        return ["er", encode_error(ev.error)]
    raise ValueError(f"cannot encode {type(ev).__name__}")


def decode_event(v: list[Any]) -> StreamEvent:
    tag = v[0]
    if tag == "td":
        return TextDelta(v[1], v[2], v[3] if len(v) > 3 else None, len(v) > 4 and v[4])
    if tag == "jd":
        return ToolInputDelta(v[1], v[2])
    if tag == "kd":
        return ThinkingDelta(v[1], v[2])
    if tag == "sd":
        return SignatureDelta(v[1], v[2])
    if tag == "bs":
        return BlockStart(v[1], decode_part(v[2]))
    if tag == "be":
        return BlockStop(v[1])
    if tag == "rd":
        return RawDelta(v[1], v[2], v[3])
    if tag == "ms":
        return MessageStart(v[1], v[2], _unusage(v[3]), v[4])
    if tag == "md":
        return MessageDelta(v[1], v[2], _unusage(v[3]), v[4])
    if tag == "me":
        return MessageStop()
    if tag == "er":
        return ErrorEvent(decode_error(v[1]))
    raise ValueError(f"unknown event tag {tag!r}")


def encode_final(f: FinalMessage) -> list[Any]:
    return [f.id, f.model, [encode_part(b) for b in f.blocks], f.stop_reason, f.stop_sequence,
            _usage(f.usage), f.extra]


def decode_final(v: list[Any]) -> FinalMessage:
    return FinalMessage(id=v[0], model=v[1], blocks=[decode_part(b) for b in v[2]],
                        stop_reason=v[3], stop_sequence=v[4], usage=_unusage(v[5]) or Usage(),
                        extra=v[6] or {})
