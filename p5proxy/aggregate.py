"""A non-streaming answer is the aggregation of the stream events: one code path for both."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from .canonical import (BlockStart, BlockStop, ErrorEvent, MessageDelta, MessageStart,
                        MessageStop, Part, RawDelta, RawPart, SignatureDelta, StreamEvent,
                        TextDelta, TextPart, ThinkingDelta, ThinkingPart, ToolCallPart,
                        ToolInputDelta, Usage)
from .errors import UpstreamProtocolError

__all__ = ["FinalMessage", "Aggregator", "parse_tool_input"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FinalMessage:
    id: str | None = None
    model: str | None = None
    blocks: list[Part] = field(default_factory=list)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None   # the upstream's own body, when it answered in one piece


def parse_tool_input(raw: str) -> dict[str, Any]:
    """Tool arguments as an object: empty means {}, broken JSON is kept rather than lost."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("tool arguments are not valid JSON; passing them as _raw")
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


class Aggregator:
    __slots__ = ("final", "_blocks", "_json", "complete")

    def __init__(self) -> None:
        self.final = FinalMessage()
        self._blocks: dict[int, Part] = {}
        self._json: dict[int, list[str]] = {}
        self.complete = False

    def feed(self, ev: StreamEvent) -> None:
        match ev:
            case TextDelta():
                part = self._blocks.get(ev.index)
                if isinstance(part, TextPart):
                    part.text += ev.text
            case ThinkingDelta():
                part = self._blocks.get(ev.index)
                if isinstance(part, ThinkingPart):
                    part.text += ev.text
            case SignatureDelta():
                part = self._blocks.get(ev.index)
                if isinstance(part, ThinkingPart):
                    part.signature = (part.signature or "") + ev.signature
            case ToolInputDelta():
                self._json.setdefault(ev.index, []).append(ev.partial_json)
            case BlockStart():
                block = ev.block
                # copy: the event's part must not be mutated by accumulation
                if isinstance(block, TextPart):
                    block = TextPart(block.text, block.meta)
                elif isinstance(block, ThinkingPart):
                    block = ThinkingPart(block.text, block.signature, block.redacted)
                elif isinstance(block, ToolCallPart):
                    block = ToolCallPart(block.id, block.name, {})
                self._blocks[ev.index] = block
                self.final.blocks.append(block)
            case BlockStop():
                part = self._blocks.get(ev.index)
                if isinstance(part, ToolCallPart):
                    raw = "".join(self._json.pop(ev.index, []))
                    part.input = parse_tool_input(raw)
                    if raw.strip():   # the text as written, for clients that get it as a string
                        part.meta = {"input_json": raw}
            case RawDelta():
                part = self._blocks.get(ev.index)
                if isinstance(part, TextPart) and ev.delta.get("type") == "citations_delta":
                    meta = part.meta if part.meta is not None else {}
                    meta.setdefault("citations", []).append(ev.delta.get("citation"))
                    part.meta = meta
                elif isinstance(part, RawPart):
                    log.debug("ignoring delta %s for a raw block", ev.delta.get("type"))
            case MessageStart():
                self.final.id, self.final.model = ev.id, ev.model
                if ev.usage is not None:
                    self.final.usage = ev.usage
                if ev.extra:
                    self.final.extra.update(ev.extra)
                self.final.body = ev.body
            case MessageDelta():
                self.final.stop_reason = ev.stop_reason
                self.final.stop_sequence = ev.stop_sequence
                if ev.usage is not None:
                    self.final.usage = ev.usage
                if ev.extra:
                    self.final.extra.update(ev.extra)
            case MessageStop():
                self.complete = True
            case ErrorEvent():
                raise ev.error

    def result(self) -> FinalMessage:
        if not self.complete:
            raise UpstreamProtocolError("upstream response ended before it was complete")
        return self.final
